package config

import (
	"fmt"
	"net"
)

// MAC is an Ethernet (EUI-48) address. It is a value: comparable with ==
// and usable as a map key. The zero MAC is "none": the configuration never
// accepts 00:00:00:00:00:00.
type MAC [6]byte

// ParseMAC reads a MAC in one of the forms net.ParseMAC accepts
// ("02:00:5e:00:00:01", "02-00-5e-00-00-01", "0200.5e00.0001") that has 6
// bytes.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, fmt.Errorf("config: %q is not a MAC address: %w", s, err)
	}
	if len(hw) != 6 {
		return MAC{}, fmt.Errorf("config: %q is not a 6-byte MAC address", s)
	}
	return MAC(hw), nil
}

// String is m as six colon-separated lower-case hex bytes.
func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// IsZero reports whether m is 00:00:00:00:00:00, that is none.
func (m MAC) IsZero() bool { return m == MAC{} }

// IsMulticast reports whether m is a group address (broadcast included):
// the I/G bit of its first byte is set.
func (m MAC) IsMulticast() bool { return m[0]&1 != 0 }

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }

// HardwareAddr is m as the net package's type, a fresh slice.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(append([]byte(nil), m[:]...)) }

// MarshalText writes m as String does.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads m as ParseMAC does.
func (m *MAC) UnmarshalText(b []byte) error {
	v, err := ParseMAC(string(b))
	if err == nil {
		*m = v
	}
	return err
}
