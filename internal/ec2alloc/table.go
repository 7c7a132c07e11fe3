package ec2alloc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/meadowrun-go/meadowrun/driver"
)

// DefaultTableName is the allocation table's name when none is given,
// the reference's.
const DefaultTableName = "meadowrun_ec2_alloc_table"

// Errors of the allocation table.
var (
	// ErrNotBooked: the worker is not booked on the instance.
	ErrNotBooked = errors.New("ec2alloc: worker not booked on the instance")
	// ErrBusy: the instance has workers booked, or had lately.
	ErrBusy = errors.New("ec2alloc: instance busy")
	// ErrNotRegistered: no such instance in the table.
	ErrNotRegistered = errors.New("ec2alloc: instance not registered")
	// ErrRegistered: the instance is in the table already.
	ErrRegistered = errors.New("ec2alloc: instance already registered")
)

// DynamoDBAPI is the part of the DynamoDB client a [Table] calls;
// *dynamodb.Client implements it.
type DynamoDBAPI interface {
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	dynamodb.ScanAPIClient
}

// Record is one instance's row in the allocation table.
type Record struct {
	InstanceID string
	Address    string // where its agent is reached
	Type       string
	Market     Market
	Zone       string
	Price      float64 // USD per hour
	// LaunchKey names the host settings the instance was launched with
	// (image, subnet, security groups, instance profile): only requests
	// with the same key reuse it.
	LaunchKey     string
	Architecture  string
	Flags         []string
	EvictionRate  float64 // percent; 0 on demand
	GPUMemoryEach int64   // bytes of each GPU
	// DiskBytes is the room for work its root volume was launched with,
	// beyond the image's own size (EphemeralStorageGB × the workers of
	// the launching request the type holds); shared by its workers, not
	// booked.
	DiskBytes int64

	Total Capacity
	Free  Capacity
	// Workers maps each booked worker to what it holds.
	Workers map[string]Capacity
	// LastUpdate is when a worker was last booked or released.
	LastUpdate time.Time
	// PreventFurtherAllocation keeps new workers off the instance (it is
	// being terminated, or was interrupted).
	PreventFurtherAllocation bool
	// Leases maps each holder of bookings (lease.go) to when its lease
	// ends unless renewed.
	Leases map[string]time.Time
}

// NewRecord makes the record of a newly launched instance of the offer
// in, before any worker is booked on it.
func NewRecord(instanceID, address, launchKey string, o Offer) Record {
	arch := DefaultArchitecture
	if len(o.Type.Architectures) > 0 && !slices.Contains(o.Type.Architectures, arch) {
		arch = o.Type.Architectures[0]
	}
	total := TypeCapacity(o.Type)
	return Record{
		InstanceID: instanceID, Address: address, Type: o.Type.Name, Market: o.Market, Zone: o.Zone, Price: o.Price,
		LaunchKey: launchKey, Architecture: arch, Flags: slices.Clone(o.Type.Flags), EvictionRate: o.EvictionRate(),
		GPUMemoryEach: o.Type.GPUMemoryBytes, Total: total, Free: total,
	}
}

// Table is the allocation table in DynamoDB: one item per instance (hash
// key instance_id) with its free capacity and its booked workers. Every
// change is a conditional write, so clients in any number of processes
// can share it.
type Table struct {
	db   DynamoDBAPI
	name string
	now  func() time.Time
}

// NewTable returns the table called name ("" means [DefaultTableName])
// reached through db.
func NewTable(db DynamoDBAPI, name string) *Table {
	if name == "" {
		name = DefaultTableName
	}
	return &Table{db: db, name: name, now: time.Now}
}

// Name returns the table's name.
func (t *Table) Name() string { return t.name }

// Create creates the table (on-demand billing) unless it exists.
func (t *Table) Create(ctx context.Context) error {
	_, err := t.db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(t.name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("instance_id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("instance_id"), KeyType: types.KeyTypeHash}},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("ec2alloc: creating table %s: %w", t.name, err)
	}
	return nil
}

// Register adds rec to the table with workers already booked on it,
// each holding per; it fails with [ErrRegistered] when the instance is
// there already.
func (t *Table) Register(ctx context.Context, rec Record, workers []string, per Capacity) error {
	rec.Workers = map[string]Capacity{}
	for _, w := range workers {
		rec.Workers[w] = per
	}
	rec.Free = rec.Total.Minus(per.Times(len(workers)))
	if f := rec.Free; f.MilliCPU < 0 || f.MemoryBytes < 0 || f.MilliGPUs < 0 || f.GPUMemoryBytes < 0 {
		return fmt.Errorf("ec2alloc: registering %s: %d workers holding %+v each do not fit in %+v", rec.InstanceID, len(workers), per, rec.Total)
	}
	rec.LastUpdate = t.now()
	_, err := t.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(t.name),
		Item:                rec.item(),
		ConditionExpression: aws.String("attribute_not_exists(instance_id)"),
	})
	if isConditionFailed(err) {
		return fmt.Errorf("%w: %s", ErrRegistered, rec.InstanceID)
	}
	if err != nil {
		return fmt.Errorf("ec2alloc: registering %s in %s: %w", rec.InstanceID, t.name, err)
	}
	return nil
}

// List returns every record, by instance id, reading every page of a
// consistent scan.
func (t *Table) List(ctx context.Context) ([]Record, error) {
	var out []Record
	p := dynamodb.NewScanPaginator(t.db, &dynamodb.ScanInput{TableName: aws.String(t.name), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ec2alloc: reading table %s: %w", t.name, err)
		}
		for _, it := range page.Items {
			rec, err := recordOf(it)
			if err != nil {
				return nil, fmt.Errorf("ec2alloc: reading table %s: %w", t.name, err)
			}
			out = append(out, rec)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.InstanceID, b.InstanceID) })
	return out, nil
}

// Get returns one instance's record, or [ErrNotRegistered].
func (t *Table) Get(ctx context.Context, instanceID string) (Record, error) {
	out, err := t.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(t.name), Key: key(instanceID), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return Record{}, fmt.Errorf("ec2alloc: reading %s from %s: %w", instanceID, t.name, err)
	}
	if out.Item == nil {
		return Record{}, fmt.Errorf("%w: %s", ErrNotRegistered, instanceID)
	}
	return recordOf(out.Item)
}

// AllocRequest is what [Table.Allocate] books.
type AllocRequest struct {
	Workers      []string // worker ids, unique in the table
	Resources    driver.Resources
	LaunchKey    string
	Architecture string // "" means DefaultArchitecture
}

// Booking is workers booked on one instance.
type Booking struct {
	InstanceID string
	Address    string
	Workers    []string
	// Record is the instance's record as read just before the booking
	// (its price, type and capacity, which do not change).
	Record Record
}

// maxBookPerUpdate bounds the workers one update books, to keep its
// expression under DynamoDB's 4 KB limit.
const maxBookPerUpdate = 40

// maxRescans bounds how often Allocate reads the table again after
// losing races; each lost race means another client booked capacity.
const maxRescans = 20

// Allocate books as many of req's workers as fit on registered instances
// with the same launch key that take new workers, best fit first (the
// instance that will have the least left: spare GPUs first, then memory
// in GB plus twice the CPUs, as the reference scores it), and returns the
// bookings and the workers left over, for which instances must be
// launched.
//
// Each booking is one conditional update that succeeds only while the
// instance still has the capacity and the workers are not booked there
// yet, so concurrent clients never overbook an instance; a client that
// loses a race reads the table again.
func (t *Table) Allocate(ctx context.Context, req AllocRequest) (booked []Booking, left []string, err error) {
	left = slices.Clone(req.Workers)
	arch := req.Architecture
	if arch == "" {
		arch = DefaultArchitecture
	}
	for range maxRescans {
		if len(left) == 0 {
			break
		}
		recs, err := t.List(ctx)
		if err != nil {
			return booked, left, err
		}
		type cand struct {
			rec *Record
			per Capacity
		}
		var cands []cand
		for i := range recs {
			r := &recs[i]
			if r.PreventFurtherAllocation || r.LaunchKey != req.LaunchKey || r.Architecture != arch {
				continue
			}
			if r.Market == Spot && r.EvictionRate > req.Resources.MaxEvictionRate {
				continue
			}
			if !hasFlags(r.Flags, req.Resources.Flags) || r.DiskBytes < req.Resources.EphemeralBytes {
				continue
			}
			per, ok := WorkerCapacity(req.Resources, r.GPUMemoryEach)
			if !ok || r.Free.fits(per) == 0 {
				continue
			}
			cands = append(cands, cand{r, per})
		}
		lost := false
		for len(left) > 0 && len(cands) > 0 {
			bestI, bestScore, bestTie := -1, [2]float64{}, uint64(0)
			for i, c := range cands {
				m := min(c.rec.Free.fits(c.per), len(left))
				rest := c.rec.Free.Minus(c.per.Times(m))
				s := [2]float64{float64(rest.MilliGPUs), float64(rest.MemoryBytes)/(1<<30) + 2*float64(rest.MilliCPU)/1000}
				// Among instances that fit as well, each request prefers
				// its own (by a hash of its first worker): clients that
				// allocate at once spread over them instead of racing
				// for one.
				tie := tieBreak(left[0], c.rec.InstanceID)
				if bestI < 0 || s[0] < bestScore[0] || s[0] == bestScore[0] && (s[1] < bestScore[1] || s[1] == bestScore[1] && tie < bestTie) {
					bestI, bestScore, bestTie = i, s, tie
				}
			}
			c := cands[bestI]
			m := min(c.rec.Free.fits(c.per), len(left), maxBookPerUpdate)
			err := t.book(ctx, c.rec.InstanceID, left[:m], c.per)
			if isConditionFailed(err) {
				lost = true
				cands = slices.Delete(cands, bestI, bestI+1)
				continue
			}
			if err != nil {
				return booked, left, err
			}
			booked = append(booked, Booking{InstanceID: c.rec.InstanceID, Address: c.rec.Address, Workers: slices.Clone(left[:m]), Record: *c.rec})
			left = left[m:]
			c.rec.Free = c.rec.Free.Minus(c.per.Times(m))
			if c.rec.Free.fits(c.per) == 0 {
				cands = slices.Delete(cands, bestI, bestI+1)
			}
		}
		if !lost {
			break
		}
	}
	return booked, left, nil
}

// book books workers on one instance, each holding per, in one
// conditional update.
func (t *Table) book(ctx context.Context, instanceID string, workers []string, per Capacity) error {
	need := per.Times(len(workers))
	names := map[string]string{}
	values := map[string]types.AttributeValue{
		":cpu": num(need.MilliCPU), ":mem": num(need.MemoryBytes), ":gpu": num(need.MilliGPUs), ":gmem": num(need.GPUMemoryBytes),
		":false": &types.AttributeValueMemberBOOL{Value: false}, ":now": num(t.now().UnixMilli()), ":b": capacityValue(per),
	}
	cond := "free_cpu >= :cpu AND free_mem >= :mem AND free_gpu >= :gpu AND free_gpu_mem >= :gmem AND prevent_further_allocation = :false"
	update := "SET free_cpu = free_cpu - :cpu, free_mem = free_mem - :mem, free_gpu = free_gpu - :gpu, free_gpu_mem = free_gpu_mem - :gmem, last_update = :now"
	for i, w := range workers {
		n := "#w" + strconv.Itoa(i)
		names[n] = w
		cond += " AND attribute_not_exists(workers." + n + ")"
		update += ", workers." + n + " = :b"
	}
	_, err := t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(t.name), Key: key(instanceID),
		ConditionExpression: aws.String(cond), UpdateExpression: aws.String(update),
		ExpressionAttributeNames: names, ExpressionAttributeValues: values,
	})
	if err != nil && !isConditionFailed(err) {
		return fmt.Errorf("ec2alloc: booking %d workers on %s: %w", len(workers), instanceID, err)
	}
	return err
}

// Release frees what worker holds on the instance; [ErrNotBooked] when it
// holds nothing there (released already, or never booked).
func (t *Table) Release(ctx context.Context, instanceID, worker string) error {
	rec, err := t.Get(ctx, instanceID)
	if err != nil {
		return err
	}
	held, ok := rec.Workers[worker]
	if !ok {
		return fmt.Errorf("%w: %s on %s", ErrNotBooked, worker, instanceID)
	}
	_, err = t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(t.name), Key: key(instanceID),
		ConditionExpression:      aws.String("attribute_exists(workers.#w)"),
		UpdateExpression:         aws.String("SET free_cpu = free_cpu + :cpu, free_mem = free_mem + :mem, free_gpu = free_gpu + :gpu, free_gpu_mem = free_gpu_mem + :gmem, last_update = :now REMOVE workers.#w"),
		ExpressionAttributeNames: map[string]string{"#w": worker},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":cpu": num(held.MilliCPU), ":mem": num(held.MemoryBytes), ":gpu": num(held.MilliGPUs), ":gmem": num(held.GPUMemoryBytes),
			":now": num(t.now().UnixMilli()),
		},
	})
	if isConditionFailed(err) {
		return fmt.Errorf("%w: %s on %s", ErrNotBooked, worker, instanceID)
	}
	if err != nil {
		return fmt.Errorf("ec2alloc: releasing %s on %s: %w", worker, instanceID, err)
	}
	return nil
}

// SetPreventFurtherAllocation sets or clears the instance's flag that
// keeps new workers off it.
func (t *Table) SetPreventFurtherAllocation(ctx context.Context, instanceID string, prevent bool) error {
	_, err := t.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(t.name), Key: key(instanceID),
		ConditionExpression:       aws.String("attribute_exists(instance_id)"),
		UpdateExpression:          aws.String("SET prevent_further_allocation = :p"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":p": &types.AttributeValueMemberBOOL{Value: prevent}},
	})
	if isConditionFailed(err) {
		return fmt.Errorf("%w: %s", ErrNotRegistered, instanceID)
	}
	if err != nil {
		return fmt.Errorf("ec2alloc: marking %s: %w", instanceID, err)
	}
	return nil
}

// Deregister removes the instance from the table, whatever is booked on
// it (the instance is gone).
func (t *Table) Deregister(ctx context.Context, instanceID string) error {
	return t.deregister(ctx, instanceID, "attribute_exists(instance_id)", nil)
}

// DeregisterIdle removes the instance from the table only if no worker is
// booked on it and none was booked or released for idleFor, checked
// atomically with the removal: a worker booked in between keeps the
// instance, and the error is then [ErrBusy]. This is the idle-termination
// path: terminate the instance only after this succeeds.
func (t *Table) DeregisterIdle(ctx context.Context, instanceID string, idleFor time.Duration) error {
	return t.deregister(ctx, instanceID, "attribute_exists(instance_id) AND size(workers) = :zero AND last_update <= :cutoff",
		map[string]types.AttributeValue{":zero": num(0), ":cutoff": num(t.now().Add(-idleFor).UnixMilli())})
}

func (t *Table) deregister(ctx context.Context, instanceID, cond string, values map[string]types.AttributeValue) error {
	_, err := t.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(t.name), Key: key(instanceID),
		ConditionExpression: aws.String(cond), ExpressionAttributeValues: values,
	})
	if isConditionFailed(err) {
		if _, gerr := t.Get(ctx, instanceID); errors.Is(gerr, ErrNotRegistered) {
			return gerr
		}
		return fmt.Errorf("%w: %s", ErrBusy, instanceID)
	}
	if err != nil {
		return fmt.Errorf("ec2alloc: deregistering %s: %w", instanceID, err)
	}
	return nil
}

func hasFlags(have, want []string) bool {
	for _, f := range want {
		if !slices.Contains(have, f) {
			return false
		}
	}
	return true
}

func isConditionFailed(err error) bool {
	var cf *types.ConditionalCheckFailedException
	return errors.As(err, &cf)
}

// tieBreak orders instances that fit a request equally well, differently
// for each request.
func tieBreak(worker, instance string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(worker))
	h.Write([]byte{0})
	h.Write([]byte(instance))
	return h.Sum64()
}
