package cli

import "golang.org/x/sys/unix"

// termIsTerminal reports whether fd is a terminal.
func termIsTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// termWidth returns the terminal's width in columns, 80 if unknown.
func termWidth(fd int) int {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 80
	}
	return int(ws.Col)
}
