package tap

import (
	"fmt"
	"net"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The tier-3 test of the device: real TAP devices, created in a network
// namespace of their own (root; outside CI it skips without).
func TestOpenSetsUpOffloadAndQueues(t *testing.T) {
	harness.RequireRoot(t)
	h := harness.New(t)
	ns := h.NS("tap")
	for _, tc := range []struct {
		name      string
		noOffload bool
		queues    int
		wantVnet  int
	}{
		{"gt-off", false, 2, vnetHdrLen},
		{"gt-plain", true, 1, 0},
	} {
		err := ns.Do(func() error {
			dev, err := Open(DeviceConfig{Name: tc.name, MTU: 1400, Queues: tc.queues, NoOffload: tc.noOffload})
			if err != nil {
				return err
			}
			if !dev.Created() || dev.Offload() == tc.noOffload || len(dev.Files()) != tc.queues {
				dev.Close()
				return fmt.Errorf("created %v, offload %v, %d queues; want created, offload %v, %d queues",
					dev.Created(), dev.Offload(), len(dev.Files()), !tc.noOffload, tc.queues)
			}
			ep, err := NewEndpoint(EndpointConfig{Name: tc.name, Files: dev.Files(), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, MTU: 1400})
			if err != nil {
				dev.Close()
				return err
			}
			if ep.vnet != tc.wantVnet {
				dev.Close()
				return fmt.Errorf("endpoint reads a %d-byte virtio-net header, want %d", ep.vnet, tc.wantVnet)
			}
			ifc, err := net.InterfaceByName(tc.name)
			if err != nil || ifc.MTU != 1400 || ifc.Flags&net.FlagUp == 0 {
				dev.Close()
				return fmt.Errorf("interface %+v (%v), want up with MTU 1400", ifc, err)
			}
			if err := dev.Close(); err != nil {
				return err
			}
			if _, err := net.InterfaceByName(tc.name); err == nil {
				return fmt.Errorf("a created device outlived its fds")
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
