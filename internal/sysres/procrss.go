package sysres

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrNoProcessGroup is returned, wrapped, by ProcessGroupRSS when no live
// process belongs to the process group.
var ErrNoProcessGroup = errors.New("sysres: no such process group")

// ProcessGroupRSS returns the sum of the resident set sizes (VmRSS in
// /proc/<pid>/status) of the live processes whose process group ID is pgid.
// Zombies do not count. If there is no such process it returns an error
// wrapping ErrNoProcessGroup.
//
// It scans every process in /proc, so its cost grows with the number of
// processes on the machine.
func ProcessGroupRSS(pgid int) (int64, error) {
	if pgid <= 0 {
		return 0, fmt.Errorf("sysres: invalid process group id %d", pgid)
	}
	usage, err := scanProcessGroups(defaultProcRoot, map[int]bool{pgid: true})
	if err != nil {
		return 0, fmt.Errorf("sysres: %w", err)
	}
	u, ok := usage[pgid]
	if !ok || u.live == 0 {
		return 0, fmt.Errorf("sysres: process group %d: %w", pgid, ErrNoProcessGroup)
	}
	return u.rss, nil
}

// groupUsage is the memory use of one process group.
type groupUsage struct {
	rss  int64 // bytes
	live int   // processes that are neither zombies nor dead
	// hwm is the highest resident set size any one of its processes ever
	// had (VmHWM), in bytes: a peak that fell between two samples.
	hwm int64
}

// scanProcessGroups reads every process below procRoot once and returns the
// usage of the process groups in want. Process groups without live
// processes are absent from the result.
func scanProcessGroups(procRoot string, want map[int]bool) (map[int]groupUsage, error) {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	usage := make(map[int]groupUsage, len(want))
	var buf [512]byte
	for _, name := range names {
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		pgrp, state, err := readStat(filepath.Join(procRoot, name, "stat"), buf[:])
		if err != nil || !want[pgrp] || state == 'Z' || state == 'X' {
			continue // most errors: the process exited since Readdirnames
		}
		status, err := os.ReadFile(filepath.Join(procRoot, name, "status"))
		if err != nil {
			continue
		}
		kb, err := parseMeminfoKB(status, "VmRSS")
		if err != nil {
			// A process that is exiting has no VmRSS any more.
			if errors.Is(err, errNoKey) {
				continue
			}
			return nil, fmt.Errorf("pid %s: %w", name, err)
		}
		u := usage[pgrp]
		u.rss += kb * 1024
		u.live++
		if hwm, err := parseMeminfoKB(status, "VmHWM"); err == nil {
			u.hwm = max(u.hwm, hwm*1024)
		}
		usage[pgrp] = u
	}
	return usage, nil
}

// readStat returns the process group ID and the state of a process from its
// /proc/<pid>/stat file: "pid (comm) state ppid pgrp ...". The command name
// may contain spaces and parentheses, so fields are counted from the last
// ')'. Only the start of the file is read, into buf.
func readStat(path string, buf []byte) (pgrp int, state byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.ReadFull(f, buf)
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		if errors.Is(err, syscall.ESRCH) {
			err = fs.ErrNotExist
		}
		return 0, 0, err
	}
	data := buf[:n]
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed %s", path)
	}
	fields := bytes.Fields(data[i+1:])
	if len(fields) < 3 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("malformed %s", path)
	}
	pgrp, err = strconv.Atoi(string(fields[2]))
	if err != nil {
		return 0, 0, fmt.Errorf("malformed %s: %w", path, err)
	}
	return pgrp, fields[0][0], nil
}
