package config

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
)

// announceKey reads a broadcast cluster's announce_key_file: the Ed25519
// private key that signs its table announcements. A relative path is
// relative to the configuration file's directory. The file must be a
// regular file that neither its group nor others can access (ghostrouter
// keygen writes it so). When the running configuration (d.prev) read the
// same file and it has not changed since (same device, inode, size and
// modification time), its key is kept without reading the file again: the
// appliance, once it dropped its privileges, may no longer be allowed to.
func (d *decoder) announceKey(t *table, c *Cluster) {
	p, ok := t.str("announce_key_file")
	if !ok {
		return
	}
	if p == "" {
		t.errorf("announce_key_file", "must not be empty")
		return
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(d.file), p)
	}
	c.AnnounceKeyFile = p
	if d.noKeys {
		return
	}
	st, err := keyfile.CheckPrivate(p)
	if err != nil {
		t.errorf("announce_key_file", "%v", err)
		return
	}
	if d.prev != nil {
		for _, old := range d.prev.Clusters {
			if old.AnnounceKeyFile == p && old.AnnounceKeyStat == st && len(old.AnnounceKey) == ed25519.PrivateKeySize {
				c.AnnounceKey, c.AnnounceKeyStat = old.AnnounceKey, st
				return
			}
		}
	}
	key, st, err := keyfile.ReadPrivate(p)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
			t.errorf("announce_key_file", "%v: the appliance runs without privileges now: a changed key file takes a restart (or make it readable by uid %d, mode 0600)", err, os.Geteuid())
			return
		}
		t.errorf("announce_key_file", "%v", err)
		return
	}
	c.AnnounceKey, c.AnnounceKeyStat = key, st
}
