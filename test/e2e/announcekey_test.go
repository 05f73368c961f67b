package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
)

// announceKeyFile is the private key file broadcast clusters name, relative
// to the configuration's directory (the test's artifact directory); its
// public key, announcePubFile, is where `ghostnode run -c` looks for it.
const (
	announceKeyFile = "announce.key"
	announcePubFile = "announce.pub"
)

// ensureAnnounceKey writes the test's announcement key pair (as ghostrouter
// keygen does) into the artifact directory, once.
func (tp *topo) ensureAnnounceKey() {
	tp.t.Helper()
	priv := filepath.Join(tp.h.ArtifactDir(), announceKeyFile)
	if _, err := os.Stat(priv); err == nil {
		return
	} else if !errors.Is(err, fs.ErrNotExist) {
		tp.t.Fatal(err)
	}
	if _, err := keyfile.Generate(priv, filepath.Join(tp.h.ArtifactDir(), announcePubFile)); err != nil {
		tp.t.Fatal(err)
	}
}
