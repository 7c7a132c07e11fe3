package ec2host

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

func TestCatalogsAreLoadedOnceAnHourAndSharedThroughTheCacheDirectory(t *testing.T) {
	dir := t.TempDir()
	loads := 0
	load := func(context.Context) (*ec2alloc.Catalog, error) {
		loads++
		return &ec2alloc.Catalog{Region: "r", Types: []ec2alloc.InstanceType{{Name: "m1.x", VCPU: 2, OnDemandPrice: 0.1}}}, nil
	}
	forget := func() {
		catalogs.Lock()
		catalogs.m = map[string]cachedCatalog{}
		catalogs.Unlock()
	}
	forget()
	t.Cleanup(forget)
	ctx := context.Background()
	for range 2 {
		c, err := cachedLoad(ctx, "k", dir, load)
		if err != nil || c.Types[0].Name != "m1.x" {
			t.Fatalf("%+v, %v", c, err)
		}
	}
	if loads != 1 {
		t.Fatalf("loaded %d times in one process, want once", loads)
	}
	forget() // another process
	if c, err := cachedLoad(ctx, "k", dir, load); err != nil || loads != 1 || c.Types[0].VCPU != 2 {
		t.Fatalf("another process loaded again (%d loads, %+v, %v): want the cache directory's", loads, c, err)
	}
	if _, err := cachedLoad(ctx, "other source", dir, load); err != nil || loads != 2 {
		t.Fatalf("another source: %d loads, %v; want its own", loads, err)
	}
	// An hour later the cache file is stale.
	files, _ := filepath.Glob(filepath.Join(dir, "catalog-*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var c cachedCatalog
		json.Unmarshal(b, &c)
		c.Loaded = c.Loaded.Add(-CatalogTTL - time.Minute)
		b, _ = json.Marshal(c)
		os.WriteFile(f, b, 0o600)
	}
	forget()
	if _, err := cachedLoad(ctx, "k", dir, load); err != nil || loads != 3 {
		t.Fatalf("a stale cache: %d loads, %v; want a new load", loads, err)
	}
}

func TestTheUserDataCarriesTheHostKey(t *testing.T) {
	k, err := newHostKey()
	if err != nil {
		t.Fatal(err)
	}
	if got := HostKeyOfUserData(userData(k)); got != k.private {
		t.Fatalf("host key from the user data:\n%s\nwant:\n%s", got, k.private)
	}
	if HostKeyOfUserData("#cloud-config\n") != "" {
		t.Fatal("a host key in user data without one")
	}
}
