// Package config owns ghostrouter's configuration file: the TOML schema of
// DESIGN.md contract 3, its strict decoding, its defaults and its validation.
//
// It is the first stage of the appliance's life: [Load] (or [Parse]) turns a
// file into a [Config] that is complete and consistent, or into [Problems],
// before any TAP device opens or any packet flows. Nothing downstream
// (router/, dispatch/, arp/, icmp/, cmd/) re-validates what this package
// guarantees:
//
//   - every key is known and has the right TOML type;
//   - every default is filled in (see the Default constants);
//   - addresses are netip values; interface addresses keep their host bits
//     (198.51.100.1/24 is the address 198.51.100.1 on the subnet
//     198.51.100.0/24); route destinations are canonical;
//   - every route has an interface (resolved from its next hop when not
//     given), every neighbor, cluster, server and broadcast address lies on
//     a connected subnet of the interface it names;
//   - names (interfaces, clusters), ghost addresses, server ids and server
//     addresses do not collide.
//
// A broadcast cluster's announce_key_file names the Ed25519 private key
// that signs its table announcements (a relative path is relative to the
// file's directory). Load checks it is a regular file its group and others
// cannot access and reads it; [Reload] keeps the running configuration's
// key when the file is unchanged (an appliance that dropped its privileges
// may not read it again); [LoadWithoutKeys] (the server agent) only records
// the path. Durations have floors and ceilings: announce_interval 100ms to
// 1h, health interval 10ms to 1h, health timeout at least 100µs.
//
// [router] user names who the appliance runs as once its devices are open
// (default nobody, resolved to ids when the file is loaded); icmp_rate,
// icmp_burst and icmp_ratemask set the per-link, per-type budgets of the
// ICMP errors the datapath sends (defaults 1000/s, 50, 0x1838: Linux's
// icmp_msgs_per_sec, icmp_msgs_burst and icmp_ratemask 0x1818, plus
// redirects).
//
// Validation is one pass that collects every problem rather than stopping at
// the first: an operator fixing a file sees all of it at once, each problem as
// "FILE:LINE: KEY: MESSAGE", which is what `ghostrouter check` prints.
//
// BurntSushi/toml does the TOML syntax; it records one position per dotted
// key, without array indices, and keeps it private, so this package locates
// lines itself (locate.go): a small scanner over the already-validated text
// that maps every key path, array indices included, to its line.
//
// The package has no state: a Config is a plain value, safe to share once
// built and never modified by this package after Parse returns.
package config
