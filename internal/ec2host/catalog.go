package ec2host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// CatalogTTL is how long a region's catalog (instance types and prices)
// is reused, in this process and from the cache directory, before it is
// loaded again: loading it takes seconds (tens on AWS, where the Pricing
// API answers in many pages), and a client that reuses a warm instance
// should not wait for it.
const CatalogTTL = time.Hour

// catalogs are this process's catalogs, by source.
var catalogs = struct {
	sync.Mutex
	m map[string]cachedCatalog
}{m: map[string]cachedCatalog{}}

type cachedCatalog struct {
	Loaded  time.Time         `json:"loaded"`
	Catalog *ec2alloc.Catalog `json:"catalog"`
}

// cachedLoad returns the catalog of the source key, from this process's
// cache, the cache directory (when dir is not ""), or load.
func cachedLoad(ctx context.Context, key, dir string, load func(context.Context) (*ec2alloc.Catalog, error)) (*ec2alloc.Catalog, error) {
	sum := sha256.Sum256([]byte(key))
	name := hex.EncodeToString(sum[:12])
	catalogs.Lock()
	defer catalogs.Unlock()
	if c, ok := catalogs.m[name]; ok && time.Since(c.Loaded) < CatalogTTL {
		return c.Catalog, nil
	}
	file := ""
	if dir != "" {
		file = filepath.Join(dir, "catalog-"+name+".json")
		if b, err := os.ReadFile(file); err == nil {
			var c cachedCatalog
			if json.Unmarshal(b, &c) == nil && c.Catalog != nil && time.Since(c.Loaded) < CatalogTTL && time.Since(c.Loaded) >= 0 {
				catalogs.m[name] = c
				return c.Catalog, nil
			}
		}
	}
	cat, err := load(ctx)
	if err != nil {
		return nil, err
	}
	c := cachedCatalog{Loaded: time.Now(), Catalog: cat}
	catalogs.m[name] = c
	if file != "" {
		// The cache is an optimisation: failing to write it is no error.
		if b, err := json.Marshal(c); err == nil && os.MkdirAll(dir, 0o700) == nil {
			tmp := fmt.Sprintf("%s.%d.tmp", file, os.Getpid())
			if os.WriteFile(tmp, b, 0o600) == nil {
				os.Rename(tmp, file)
			}
		}
	}
	return cat, nil
}

// loadCatalog returns the region's instance types and prices (cached for
// CatalogTTL), cut down to Options.InstanceTypes when given.
func (h *Host) loadCatalog(ctx context.Context) (*ec2alloc.Catalog, error) {
	h.catMu.Lock()
	defer h.catMu.Unlock()
	if h.catalog != nil {
		return h.catalog, nil
	}
	key := h.opts.CatalogKey
	if key == "" {
		key = h.opts.Region
	}
	full, err := cachedLoad(ctx, key, h.opts.CacheDir, func(ctx context.Context) (*ec2alloc.Catalog, error) {
		lo := ec2alloc.LoadOptions{Region: h.opts.Region, EC2: h.opts.EC2, Pricing: h.opts.Pricing}
		if h.opts.SpotAdvisor != nil {
			lo.SpotAdvisor = strings.NewReader(string(h.opts.SpotAdvisor))
		}
		return ec2alloc.LoadCatalog(ctx, lo)
	})
	if err != nil {
		return nil, fmt.Errorf("ec2 host: %w", err)
	}
	c := &ec2alloc.Catalog{Region: full.Region, Types: full.Types}
	if len(h.opts.InstanceTypes) > 0 {
		var keep []ec2alloc.InstanceType
		for _, t := range full.Types {
			if slices.Contains(h.opts.InstanceTypes, t.Name) {
				keep = append(keep, t)
			}
		}
		for _, n := range h.opts.InstanceTypes {
			if !slices.ContainsFunc(keep, func(t ec2alloc.InstanceType) bool { return t.Name == n }) {
				return nil, fmt.Errorf("ec2 host: instance type %s is not offered in %s", n, h.opts.Region)
			}
		}
		c.Types = keep
	}
	h.catalog = c
	return c, nil
}
