// Package limits is the one place that states how big a cluster the
// appliance serves: how many servers, buckets and members per announcement.
// The configuration's validation (`ghostrouter check`), the bucket table, the
// modulo selector and the announcement codec all read these constants, so a
// file the checker accepts is one the running appliance can serve. It has no
// imports, so every package can use it.
package limits

const (
	// Buckets is the most buckets a cluster's table has. It is also the
	// largest `jhash ... mod B` a server's broadcast-mode filter installs.
	Buckets = 65536

	// Servers is the most servers (configured members, drained or not) one
	// cluster has. A table build is about O(Buckets * Servers) hash
	// evaluations; a health change costs about Buckets/Servers.
	Servers = 4096

	// ModuloServers is the most servers of a cluster that uses the patent's
	// modulo function (hash = "modulo"). Its failure rule walks a client's
	// fallback list one down server at a time, each step a scan of a bitmap
	// of the servers (servers/64 words), so a packet costs O(down x
	// servers/64): under a microsecond with a few servers down, and in the
	// pathological case of all but one of 1024 down about 16,000 word
	// operations (BenchmarkModuloWorstCase measures 64 and 4096 servers).
	ModuloServers = 1024

	// AnnounceMembers is the most servers one table announcement carries:
	// the table's limit, so a broadcast-mode cluster that announces its
	// membership (announce_key set) has the same limit as any other. An
	// announcement longer than a datagram is sent in segments and
	// reassembled by the servers.
	AnnounceMembers = Servers

	// Weight is the largest weight of one server.
	Weight = 65535
)
