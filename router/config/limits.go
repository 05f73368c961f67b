package config

// ServerLimit is the most servers cluster c may have, and what sets it: the
// bucket table (MaxServers), the modulo function's per-packet cost
// (MaxModuloServers), or, for a broadcast cluster that announces its table,
// the members one announcement carries (MaxAnnounceMembers, which
// announcements in segments make the table's limit).
func ServerLimit(c *Cluster) (n int, why string) {
	switch {
	case c.Hash == HashModulo:
		return MaxModuloServers, "hash = \"modulo\" walks its failure rule server by server for every packet"
	case c.Mode == ModeBroadcast && c.AnnounceKeyFile != "":
		return min(MaxAnnounceMembers, MaxServers), "the bucket table's limit, which one table announcement carries"
	default:
		return MaxServers, "the bucket table's limit"
	}
}

// checkLimits reports a cluster with more servers than the appliance can
// serve it with, at the first server beyond the limit. Buckets and weights
// are bounded where they are decoded.
func (d *decoder) checkLimits(cfg *Config) {
	for i := range cfg.Clusters {
		c, src := &cfg.Clusters[i], d.clusters[i]
		n, why := ServerLimit(c)
		if len(c.Servers) <= n {
			continue
		}
		src.t.errorAt(src.servers[n].line, "server", "%d servers: at most %d (%s)", len(c.Servers), n, why)
	}
}
