package ec2_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
	"github.com/meadowrun-go/meadowrun/internal/ec2sim"
)

// EphemeralStorageGB becomes the root volume of the instances launched
// for it: a gp3 volume on the image's root device, deleted with the
// instance, of the image's size plus the disk of each worker the type
// holds (two of one CPU on a t3.medium). The table records that room;
// an instance with enough is reused, one with too little is not.
func TestEC2RootVolumeForEphemeralStorage(t *testing.T) {
	b := ec2sim.Open(t)
	ctx := t.Context()
	imgs, err := b.EC2.DescribeImages(ctx, &awsec2.DescribeImagesInput{ImageIds: []string{b.AMI}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("DescribeImages: %v", err)
	}
	img := imgs.Images[0]
	rootDev, imageGiB := aws.ToString(img.RootDeviceName), int32(0)
	for _, m := range img.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == rootDev && m.Ebs != nil {
			imageGiB = aws.ToInt32(m.Ebs.VolumeSize)
		}
	}
	if rootDev == "" || imageGiB == 0 {
		t.Fatalf("image %s: root device %q of %d GiB", b.AMI, rootDev, imageGiB)
	}
	h := newEC2(t, options(b))
	run := func(diskGB float64) {
		t.Helper()
		o := &meadowrun.Options{LogDir: t.TempDir(), Resources: &meadowrun.Resources{LogicalCPU: 1, EphemeralStorageGB: diskGB}}
		if _, err := meadowrun.RunFunction(ctx, ec2Where.With(1), h, o); err != nil {
			t.Fatal(err)
		}
	}
	table := ec2alloc.NewTable(dynamodb.NewFromConfig(b.Config), "")
	records := func() map[string]ec2alloc.Record {
		t.Helper()
		recs, err := table.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]ec2alloc.Record{}
		for _, r := range recs {
			m[r.InstanceID] = r
		}
		return m
	}
	// rootVolume returns the instance's root volume, from its block
	// device mapping and DescribeVolumes.
	rootVolume := func(id string) types.Volume {
		t.Helper()
		out, err := b.EC2.DescribeInstances(ctx, &awsec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil || len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
			t.Fatalf("DescribeInstances %s: %v", id, err)
		}
		var vol string
		for _, m := range out.Reservations[0].Instances[0].BlockDeviceMappings {
			if aws.ToString(m.DeviceName) == rootDev && m.Ebs != nil {
				vol = aws.ToString(m.Ebs.VolumeId)
				if !aws.ToBool(m.Ebs.DeleteOnTermination) {
					t.Errorf("%s: the root volume is not deleted on termination", id)
				}
			}
		}
		if vol == "" {
			t.Fatalf("%s: no volume on the root device %s", id, rootDev)
		}
		vs, err := b.EC2.DescribeVolumes(ctx, &awsec2.DescribeVolumesInput{VolumeIds: []string{vol}})
		if err != nil || len(vs.Volumes) != 1 {
			t.Fatalf("DescribeVolumes %s: %v", vol, err)
		}
		return vs.Volumes[0]
	}

	run(20)
	recs := records()
	if len(recs) != 1 {
		t.Fatalf("table after the first job: %v", recs)
	}
	var first ec2alloc.Record
	for _, r := range recs {
		first = r
	}
	v := rootVolume(first.InstanceID)
	if want := imageGiB + 2*20; aws.ToInt32(v.Size) != want || v.VolumeType != types.VolumeTypeGp3 {
		t.Errorf("root volume %s: %d GiB %s, want %d GiB (the image's %d and 2 workers × 20) gp3", aws.ToString(v.VolumeId), aws.ToInt32(v.Size), v.VolumeType, want, imageGiB)
	}
	if first.DiskBytes != 40<<30 {
		t.Errorf("the table records %d bytes of disk, want 40 GiB", first.DiskBytes)
	}

	// Room enough: reused; 30 GB too (40 in all); 41 GB is more than it
	// has: a new instance, of the image's size + 2 × 41.
	run(20)
	run(30)
	if n := len(records()); n != 1 {
		t.Fatalf("%d instances after jobs that fit the first one's disk, want 1", n)
	}
	// A new client (the cache directory's findings, its checks skipped)
	// sizes the root volume alike.
	h = newEC2(t, options(b))
	run(41)
	recs = records()
	if len(recs) != 2 {
		t.Fatalf("%d instances after a job with more disk than the first has, want 2", len(recs))
	}
	for id, r := range recs {
		if id == first.InstanceID {
			continue
		}
		if got, want := aws.ToInt32(rootVolume(id).Size), imageGiB+2*41; got != want || r.DiskBytes != 82<<30 {
			t.Errorf("second instance: root volume %d GiB, table %d bytes; want %d GiB, 82 GiB", got, r.DiskBytes, want)
		}
	}
	// Without disk: the image's volume, any instance (no third).
	run(0)
	if n := len(records()); n != 2 {
		t.Errorf("%d instances after a job without disk, want 2", n)
	}
}
