package ec2sim

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// A simulated instance's shutdown is the simulator's part too: the
// machine's shutdown command (in its own mount namespace, over the
// host's shutdown) only leaves a note, and the simulator then does what
// EC2 does when an instance shuts itself down: it stops or terminates the
// instance in moto, as its InstanceInitiatedShutdownBehavior says, and
// the machine goes with the next sync.

// shutdownNote is the file of the machine's directory its shutdown
// command writes.
const shutdownNote = "shutdown-requested"

// shutdownScript is the machine's shutdown command.
func shutdownScript(dir string) string {
	return fmt.Sprintf(`#!/bin/sh
# Simulated EC2 instance (internal/ec2sim): the simulator stops or
# terminates the instance in moto, as EC2 would.
echo "$*" > %s/%s
`, dir, shutdownNote)
}

// shutdownMount is the part of the machine's start script ($2: its
// directory) that puts its shutdown command over the host's, in the
// machine's mount namespace only.
const shutdownMount = `if p=$(command -v shutdown); then mount --bind "$2/shutdown" "$(readlink -f "$p")"
else mkdir -p /usr/local/sbin && mount -t tmpfs tmpfs /usr/local/sbin && cp "$2/shutdown" /usr/local/sbin/shutdown; fi`

// shutdowns passes on to moto the shutdowns the machines asked for.
func (s *Sim) shutdowns() {
	s.mu.Lock()
	var ms []*machine
	for _, m := range s.machines {
		if m.dir != "" && !m.shutdown {
			if _, err := os.Stat(filepath.Join(m.dir, shutdownNote)); err == nil {
				m.shutdown = true
				ms = append(ms, m)
			}
		}
	}
	s.mu.Unlock()
	ctx := s.t.Context()
	for _, m := range ms {
		behaviour := types.ShutdownBehaviorStop // EC2's default
		attr, err := s.api.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(m.id),
			Attribute: types.InstanceAttributeNameInstanceInitiatedShutdownBehavior})
		if err == nil && attr.InstanceInitiatedShutdownBehavior != nil {
			behaviour = types.ShutdownBehavior(aws.ToString(attr.InstanceInitiatedShutdownBehavior.Value))
		}
		if behaviour == types.ShutdownBehaviorTerminate {
			_, err = s.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{m.id}})
		} else {
			_, err = s.api.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{m.id}})
		}
		if err != nil && ctx.Err() == nil {
			s.t.Errorf("ec2sim: %s shut itself down; %s in moto: %v", m.id, behaviour, err)
		}
	}
}
