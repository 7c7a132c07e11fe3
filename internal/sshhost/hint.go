package sshhost

// setting names an option as the user of this host sets it: a parameter of
// the ssh:// URL when the host was opened from one (the command line), a
// field of ssh.Options otherwise.
func (o Options) setting(field, param string) string {
	if o.FromURL {
		return param + " in the ssh:// host URL"
	}
	return "ssh.Options." + field
}
