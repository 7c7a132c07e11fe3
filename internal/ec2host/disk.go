package ec2host

import (
	"fmt"
	"math"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// maxVolumeGiB is the largest gp3 volume EC2 makes.
const maxVolumeGiB = 16384

// defaultRootGiB is the root volume's size when the image does not say.
const defaultRootGiB = 8

// rootImage is what the host knows of the AMI's root device.
type rootImage struct {
	device  string // RootDeviceName, e.g. /dev/sda1 or /dev/xvda
	ebs     bool   // RootDeviceType ebs (not instance-store)
	sizeGiB int32  // the root snapshot's size
}

// rootOf reads the root device of img.
func rootOf(img types.Image) rootImage {
	r := rootImage{device: aws.ToString(img.RootDeviceName), ebs: img.RootDeviceType != types.DeviceTypeInstanceStore, sizeGiB: defaultRootGiB}
	for _, m := range img.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == r.device && m.Ebs != nil && aws.ToInt32(m.Ebs.VolumeSize) > 0 {
			r.sizeGiB = aws.ToInt32(m.Ebs.VolumeSize)
		}
	}
	return r
}

// checkDisk says whether workers of r can get their EphemeralStorageGB
// on this host's instances: the image's root device must be an EBS
// volume, and one worker's disk must fit on the largest gp3 volume.
func (h *Host) checkDisk(r driver.Resources) error {
	if r.EphemeralBytes <= 0 {
		return nil
	}
	if !h.root.ebs || h.root.device == "" {
		return fmt.Errorf("ec2 host: a worker of %s %w: AMI %s has an instance-store root device, whose size cannot be chosen; use an EBS-backed image (RootDeviceType ebs) for EphemeralStorageGB", r, driver.ErrNeverFits, h.opts.AMI)
	}
	if int64(h.root.sizeGiB)+gib(r.EphemeralBytes) > maxVolumeGiB {
		return fmt.Errorf("ec2 host: a worker of %s %w: its disk and AMI %s's %d GiB exceed the largest EBS volume (%d GiB); ask for less EphemeralStorageGB", r, driver.ErrNeverFits, h.opts.AMI, h.root.sizeGiB, maxVolumeGiB)
	}
	return nil
}

// gib is n bytes in GiB, rounded up.
func gib(n int64) int64 { return int64(math.Ceil(float64(n) / (1 << 30))) }

// rootVolume returns the root volume for an instance of type t launched
// for a worker of r: the image's size plus EphemeralStorageGB for each
// worker of r the type holds (as many as the largest volume allows), and
// the room for work that gives, which the table records; no mapping (the
// image's own volume) when r asks for no disk.
func (h *Host) rootVolume(t *ec2alloc.InstanceType, r driver.Resources) (*types.BlockDeviceMapping, int64) {
	if r.EphemeralBytes <= 0 || !h.root.ebs || h.root.device == "" {
		return nil, 0
	}
	n := int64(max(1, ec2alloc.WorkersPerInstance(t, r)))
	per := gib(r.EphemeralBytes)
	n = max(1, min(n, (maxVolumeGiB-int64(h.root.sizeGiB))/per))
	size := int64(h.root.sizeGiB) + n*per
	return &types.BlockDeviceMapping{DeviceName: aws.String(h.root.device), Ebs: &types.EbsBlockDevice{
		VolumeSize: aws.Int32(int32(size)), VolumeType: types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(true),
	}}, n * per << 30
}
