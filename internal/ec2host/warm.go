package ec2host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/tracepoint"
)

// A new client on a warm instance: what the user's cache directory keeps
// between runs of the same settings, so that a new process pays the
// round trips of its first call once, side by side, and not one after
// another:
//
//   - what New's checks found (the AMI's architecture, the subnets'
//     zones) and that the allocation table exists: a host whose
//     settings passed the checks within warmTTL books at once. A booking
//     on a running instance of the same settings (its launch key) is
//     their proof: they are run again, and waited for, before an
//     instance is launched only (or when the table cannot be read), and
//     their error is then Start's;
//   - Fit's answers, which would otherwise read the whole catalog from
//     the cache directory;
//   - the instance its last worker ran on, with its address and host key
//     (from the instance's tag): New logs in to it and opens the agent
//     session at once, while the table is read and the worker booked.
//     The booking decides: a worker booked on that instance, at that
//     address, uses the session; booked elsewhere, the session is closed.
//     The host key is the one the tag gave (a machine now at that address
//     with another key is refused, as always), and no DescribeInstances
//     is needed to read it again.
//
// The lease renewal and the read of the instance's price go beside the
// login and the worker's start too.

// warmTTL is how long a check's findings are trusted without waiting for
// them again.
const warmTTL = CatalogTTL

// warmState is the cache directory's file for one host's settings.
type warmState struct {
	Checked time.Time `json:"checked"`
	Arch    string    `json:"arch"`
	Zones   []string  `json:"zones"` // of Options.Subnets, in order
	// RootDevice, RootEBS and RootGiB are the AMI's root device, for
	// root volumes sized by EphemeralStorageGB.
	RootDevice string `json:"root_device"`
	RootEBS    bool   `json:"root_ebs"`
	RootGiB    int32  `json:"root_gib"`
	Instance   string `json:"instance,omitempty"`
	Address    string `json:"address,omitempty"`
	HostKey    string `json:"host_key,omitempty"` // "TYPE BASE64"
	// Fits are Fit's answers, by the resources' String: they depend on
	// the catalog, which is kept as long.
	Fits map[string]int `json:"fits,omitempty"`
}

// warmFile names the file of the host's settings (its launch key,
// region, endpoints and table), "" without a cache directory.
func (h *Host) warmFile() string {
	if h.opts.CacheDir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{h.key, h.opts.Region, h.opts.CatalogKey, h.table.Name(), h.opts.KeyFile}, "\x00")))
	return filepath.Join(h.opts.CacheDir, "warm-"+hex.EncodeToString(sum[:12])+".json")
}

// loadWarm returns the cached state, when fresh and about these subnets.
func (h *Host) loadWarm() (warmState, bool) {
	var w warmState
	f := h.warmFile()
	if f == "" {
		return w, false
	}
	b, err := os.ReadFile(f)
	if err != nil || json.Unmarshal(b, &w) != nil {
		return w, false
	}
	age := time.Since(w.Checked)
	return w, age >= 0 && age < warmTTL && w.Arch != "" && w.RootDevice != "" && len(w.Zones) == len(h.opts.Subnets)
}

// saveWarm writes w (the cache is an optimisation: failing to write it
// is no error).
func (h *Host) saveWarm(w warmState) {
	f := h.warmFile()
	if f == "" {
		return
	}
	b, err := json.Marshal(w)
	if err != nil || os.MkdirAll(filepath.Dir(f), 0o700) != nil {
		return
	}
	tmp := fmt.Sprintf("%s.%d.tmp", f, os.Getpid())
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, f)
	}
}

// forgetWarm removes the cached state (its checks failed).
func (h *Host) forgetWarm() {
	if f := h.warmFile(); f != "" {
		os.Remove(f)
	}
}

// checkedState is the state of checks that passed just now.
func (h *Host) checkedState() warmState {
	w := warmState{Checked: time.Now(), Arch: h.arch, RootDevice: h.root.device, RootEBS: h.root.ebs, RootGiB: h.root.sizeGiB}
	for _, s := range h.opts.Subnets {
		w.Zones = append(w.Zones, h.subnet[s])
	}
	return w
}

// useWarm takes the checks' findings from w instead of checking now:
// waitChecked checks before a launch.
func (h *Host) useWarm(w warmState) {
	h.arch = w.Arch
	h.root = rootImage{device: w.RootDevice, ebs: w.RootEBS, sizeGiB: w.RootGiB}
	for i, s := range h.opts.Subnets {
		h.subnet[s] = w.Zones[i]
		if !slices.Contains(h.zones, w.Zones[i]) {
			h.zones = append(h.zones, w.Zones[i])
		}
	}
	h.warm = w
	h.checked = make(chan struct{})
}

// startChecks runs the checks New skipped, once; waitChecked waits for
// them.
func (h *Host) startChecks() {
	h.mu.Lock()
	w := h.warm
	h.mu.Unlock()
	go func() {
		defer close(h.checked)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// On a scratch host: h's fields are in use already.
		scratch := &Host{opts: h.opts, subnet: map[string]string{}}
		err := scratch.check(ctx)
		if err == nil && scratch.arch != w.Arch {
			err = fmt.Errorf("ec2 host: AMI %s is %s now, not %s", h.opts.AMI, scratch.arch, w.Arch)
		}
		if err == nil {
			if err = h.table.Create(ctx); err != nil {
				err = fmt.Errorf("ec2 host: %w", err)
			}
		}
		tracepoint.Mark("ec2host: background checks done")
		h.checkErr = err
		if err != nil {
			h.forgetWarm()
			return
		}
		h.mu.Lock()
		h.warm.Checked = time.Now()
		w := h.warm
		h.mu.Unlock()
		h.saveWarm(w)
	}()
}

// preconnect logs in to the instance of w, if any, ahead of the booking.
func (h *Host) preconnect(w warmState) {
	if w.Instance == "" || w.Address == "" || w.HostKey == "" {
		return
	}
	kh := filepath.Join(h.dir, w.Instance+".known_hosts")
	if os.WriteFile(kh, []byte(w.Address+" "+w.HostKey+"\n"), 0o600) != nil {
		return
	}
	h.pre = &instance{id: w.Instance, addr: w.Address, ready: make(chan struct{}), pre: true}
	go h.connect(h.pre)
}

// waitChecked runs the checks New skipped, if any, and returns their
// error.
func (h *Host) waitChecked(ctx context.Context) error {
	if h.checked == nil {
		return nil
	}
	h.checkOnce.Do(h.startChecks)
	select {
	case <-h.checked:
		return h.checkErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// adoptPre returns the instance logged in to ahead of the booking when
// the worker was booked on it, at the same address, for use; and closes
// it otherwise. h.mu is held.
func (h *Host) adoptPre(id, addr string) *instance {
	p := h.pre
	if p == nil {
		return nil
	}
	h.pre = nil
	if p.id == id && p.addr == addr {
		return p
	}
	go closeWhenReady(p)
	return nil
}

func closeWhenReady(inst *instance) {
	<-inst.ready
	if inst.agent != nil {
		inst.agent.Close()
	}
}

// rememberWarm records inst as the instance of the host's last worker,
// with the host key it was reached with.
func (h *Host) rememberWarm(inst *instance) {
	if h.opts.CacheDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(h.dir, inst.id+".known_hosts"))
	if err != nil {
		return
	}
	addr, key, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok || addr != inst.addr {
		return
	}
	h.mu.Lock()
	w := h.warm
	if w.Instance == inst.id && w.Address == addr && w.HostKey == key {
		h.mu.Unlock()
		return
	}
	w.Instance, w.Address, w.HostKey = inst.id, addr, key
	h.warm = w
	h.mu.Unlock()
	h.saveWarm(w)
}

// warmFit returns Fit's cached answer for r.
func (h *Host) warmFit(r driver.Resources) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.warm.Fits[r.String()]
	return n, ok && !h.warm.Checked.IsZero()
}

// rememberFit caches Fit's answer n for r.
func (h *Host) rememberFit(r driver.Resources, n int) {
	h.mu.Lock()
	if h.warm.Checked.IsZero() || h.warm.Fits[r.String()] == n {
		h.mu.Unlock()
		return
	}
	w := h.warm
	w.Fits = maps.Clone(w.Fits)
	if w.Fits == nil {
		w.Fits = map[string]int{}
	}
	w.Fits[r.String()] = n
	h.warm = w
	h.mu.Unlock()
	h.saveWarm(w)
}
