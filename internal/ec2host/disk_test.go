package ec2host

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/meadowrun-go/meadowrun/driver"
	"github.com/meadowrun-go/meadowrun/internal/ec2alloc"
)

// The root volume's size: the image's, plus the disk of each worker the
// type holds, bounded by the largest gp3 volume; an instance-store image,
// or a disk larger than any volume, never fits.
func TestRootVolume(t *testing.T) {
	img := types.Image{RootDeviceName: aws.String("/dev/xvda"), RootDeviceType: types.DeviceTypeEbs,
		BlockDeviceMappings: []types.BlockDeviceMapping{
			{DeviceName: aws.String("/dev/sdb"), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(100)}},
			{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(12)}},
		}}
	h := &Host{opts: Options{AMI: "ami-x"}, root: rootOf(img)}
	typ := &ec2alloc.InstanceType{Name: "m5.xlarge", VCPU: 4, MemoryBytes: 16 << 30}
	for _, c := range []struct {
		disk, cpu float64
		wantGiB   int32
		wantRoom  int64
	}{
		{0, 1, 0, 0},
		{10, 1, 12 + 4*10, 40 << 30},
		{10, 2, 12 + 2*10, 20 << 30},
		{2.5, 4, 12 + 3, 3 << 30},           // rounded up to whole GiB
		{5000, 1, 12 + 3*5000, 15000 << 30}, // three fit on the largest volume, not four
	} {
		r := driver.Resources{LogicalCPU: c.cpu, EphemeralBytes: int64(c.disk * (1 << 30))}
		if err := h.checkDisk(r); err != nil {
			t.Errorf("%v: %v", r, err)
		}
		vol, room := h.rootVolume(typ, r)
		if c.wantGiB == 0 {
			if vol != nil || room != 0 {
				t.Errorf("%v: volume %v, room %d; want the image's", r, vol, room)
			}
			continue
		}
		if vol == nil || aws.ToString(vol.DeviceName) != "/dev/xvda" || aws.ToInt32(vol.Ebs.VolumeSize) != c.wantGiB || vol.Ebs.VolumeType != types.VolumeTypeGp3 || !aws.ToBool(vol.Ebs.DeleteOnTermination) || room != c.wantRoom {
			t.Errorf("%v: volume %+v, room %d; want %d GiB gp3 on /dev/xvda deleted on termination, room %d", r, vol, room, c.wantGiB, c.wantRoom)
		}
	}
	if err := h.checkDisk(driver.Resources{EphemeralBytes: 16380 << 30}); !errors.Is(err, driver.ErrNeverFits) || !strings.Contains(err.Error(), "largest EBS volume") {
		t.Errorf("a disk larger than any volume: %v", err)
	}
	img.RootDeviceType = types.DeviceTypeInstanceStore
	h.root = rootOf(img)
	if err := h.checkDisk(driver.Resources{EphemeralBytes: 1 << 30}); !errors.Is(err, driver.ErrNeverFits) || !strings.Contains(err.Error(), "instance-store") {
		t.Errorf("an instance-store image: %v", err)
	}
	if err := h.checkDisk(driver.Resources{}); err != nil {
		t.Errorf("an instance-store image, no disk asked: %v", err)
	}
}
