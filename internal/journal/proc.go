package journal

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Self identifies this process for Record.Proc: its boot and its start
// time, so that a process id reused after the process ended (or after a
// reboot) is not mistaken for it.
func Self() string { return Identity(os.Getpid()) }

// Identity identifies process pid as Self does; "" if it is not running.
func Identity(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 (start time) is f[19].
	if len(f) < 20 || f[0] == "Z" {
		return ""
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return fmt.Sprintf("%s/%s", strings.TrimSpace(string(boot)), f[19])
}

// Alive reports whether the process that recorded (pid, proc) still runs.
func Alive(pid int, proc string) bool {
	if pid <= 0 {
		return false
	}
	if proc == "" {
		return syscall.Kill(pid, 0) == nil
	}
	return Identity(pid) == proc
}
