package keyfile

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestGenerate: the private key is 0600 and the public key 0644 whatever
// the umask (even 0: everything readable by default); nothing is ever
// overwritten; what is written reads back as a pair.
func TestGenerate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "web.key"), filepath.Join(dir, "web.pub")
	key, err := Generate(priv, pub)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{priv: 0o600, pub: 0o644} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v; want %v", path, err, fi.Mode().Perm(), want)
		}
	}
	k, _, err := ReadPrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ReadPublic(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.Public().(ed25519.PublicKey), key) || !bytes.Equal(p, key) {
		t.Error("the files do not hold the generated pair")
	}
	before, _ := os.ReadFile(priv)
	if _, err := Generate(priv, filepath.Join(dir, "other.pub")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Generate over an existing private key: %v, want it to exist already", err)
	}
	if _, err := Generate(filepath.Join(dir, "other.key"), pub); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Generate over an existing public key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.key")); err == nil {
		t.Error("a half-written pair was left behind")
	}
	if after, _ := os.ReadFile(priv); !bytes.Equal(before, after) {
		t.Error("the private key changed")
	}
	if got := PublicPath("/etc/ghostrouter/web.key"); got != "/etc/ghostrouter/web.pub" {
		t.Errorf("PublicPath = %q", got)
	}
	if got := PublicPath("/etc/ghostrouter.d/web"); got != "/etc/ghostrouter.d/web.pub" {
		t.Errorf("PublicPath without extension = %q", got)
	}
}

// TestReadChecks: a private key its group or others can access, a
// non-regular file, a public key given as the private one (and the other
// way round), garbage and an oversized file are refused.
func TestReadChecks(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if _, err := Generate(priv, pub); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o640, 0o604, 0o620, 0o610} {
		os.Chmod(priv, mode)
		if _, _, err := ReadPrivate(priv); !errors.Is(err, ErrPermissive) {
			t.Errorf("mode %04o: %v, want ErrPermissive", mode, err)
		}
		if _, err := CheckPrivate(priv); !errors.Is(err, ErrPermissive) {
			t.Errorf("CheckPrivate mode %04o: %v", mode, err)
		}
	}
	os.Chmod(priv, 0o400)
	if _, _, err := ReadPrivate(priv); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	if _, _, err := ReadPrivate(dir); err == nil {
		t.Error("a directory was read as a key")
	}
	if _, err := ReadPublic(priv); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Errorf("a private key as the public one: %v", err)
	}
	pubAsPriv := filepath.Join(dir, "pub-as-priv")
	data, _ := os.ReadFile(pub)
	os.WriteFile(pubAsPriv, data, 0o600)
	if _, _, err := ReadPrivate(pubAsPriv); !errors.Is(err, ErrFormat) {
		t.Errorf("a public key as the private one: %v", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("A"), MaxFile+1), 0o600)
	if _, _, err := ReadPrivate(big); !errors.Is(err, ErrFormat) {
		t.Errorf("an oversized file: %v", err)
	}
	trailing := filepath.Join(dir, "trailing")
	keyPEM, _ := os.ReadFile(priv)
	os.WriteFile(trailing, append(keyPEM, "more"...), 0o600)
	if _, _, err := ReadPrivate(trailing); !errors.Is(err, ErrFormat) {
		t.Errorf("a key with trailing data: %v", err)
	}
}

// TestOpenSSLInterop: OpenSSL is the independent oracle of the encodings:
// a key it generates is read; the public key it derives from ours is the
// one Generate wrote; what it signs, Go verifies with our public key.
func TestOpenSSLInterop(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is missing")
		}
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	osslKey := filepath.Join(dir, "ossl.key")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", osslKey).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	os.Chmod(osslKey, 0o600)
	k, _, err := ReadPrivate(osslKey)
	if err != nil {
		t.Fatalf("OpenSSL's key: %v", err)
	}
	priv, pub := filepath.Join(dir, "g.key"), filepath.Join(dir, "g.pub")
	if _, err := Generate(priv, pub); err != nil {
		t.Fatal(err)
	}
	derived, err := exec.Command("openssl", "pkey", "-in", priv, "-pubout").Output()
	if err != nil {
		t.Fatalf("openssl pkey -pubout: %v", err)
	}
	written, _ := os.ReadFile(pub)
	if !bytes.Equal(derived, written) {
		t.Errorf("OpenSSL derives\n%s\nfrom our private key; we wrote\n%s", derived, written)
	}
	msg := filepath.Join(dir, "msg")
	os.WriteFile(msg, []byte("GHRT announcement body"), 0o644)
	sig, err := exec.Command("openssl", "pkeyutl", "-sign", "-inkey", osslKey, "-rawin", "-in", msg).Output()
	if err != nil {
		t.Fatalf("openssl pkeyutl -sign: %v", err)
	}
	if !ed25519.Verify(k.Public().(ed25519.PublicKey), []byte("GHRT announcement body"), sig) {
		t.Error("OpenSSL's signature does not verify with the key as we read it")
	}
}
