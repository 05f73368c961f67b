// Package keyfile owns the files of the Ed25519 key pair that signs a
// broadcast cluster's table announcements: the private key, which only the
// appliance reads, and the public key, which every server agent holds.
//
// Both are PEM files in the standard encodings, so OpenSSL reads and writes
// them too (`openssl genpkey -algorithm ed25519`, `openssl pkey -pubout`):
//
//	private: "PRIVATE KEY" block, PKCS #8 (RFC 8410), mode 0600
//	public:  "PUBLIC KEY" block, PKIX SubjectPublicKeyInfo, mode 0644
//
// A private key file that its group or other users may read, write or run
// is refused: a key anyone on the appliance could read signs tables for
// every server. Key files must be regular files and are read with a size
// bound (MaxFile).
package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MaxFile is the largest key file read, in bytes: an Ed25519 key in PEM is
// about 120 bytes.
const MaxFile = 4096

// File modes Generate writes.
const (
	PrivateMode fs.FileMode = 0o600
	PublicMode  fs.FileMode = 0o644
)

// Errors of the readers; wrapped with the path, so test with errors.Is.
var (
	// ErrPermissive: a private key file its group or others can access.
	ErrPermissive = errors.New("readable or writable by group or others: chmod 600 it")
	// ErrNotRegular: not a regular file.
	ErrNotRegular = errors.New("not a regular file")
	// ErrFormat: not a PEM Ed25519 key of the expected kind.
	ErrFormat = errors.New("not an Ed25519 key in PEM")
)

// EncodePrivate is the PEM encoding of key (PKCS #8).
func EncodePrivate(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodePublic is the PEM encoding of key (PKIX).
func EncodePublic(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// onlyBlock returns the single PEM block of data, of type want, with
// nothing but white space around it.
func onlyBlock(data []byte, want string) (*pem.Block, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrFormat)
	}
	if b.Type != want {
		if b.Type == "PRIVATE KEY" && want == "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: this is a private key; give the public one (ghostrouter keygen writes both)", ErrFormat)
		}
		return nil, fmt.Errorf("%w: a %q block, want %q", ErrFormat, b.Type, want)
	}
	if len(b.Headers) != 0 {
		return nil, fmt.Errorf("%w: PEM headers (an encrypted key?)", ErrFormat)
	}
	for _, c := range rest {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return nil, fmt.Errorf("%w: more after the key", ErrFormat)
		}
	}
	return b, nil
}

// DecodePrivate parses a PEM PKCS #8 Ed25519 private key.
func DecodePrivate(data []byte) (ed25519.PrivateKey, error) {
	b, err := onlyBlock(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T", ErrFormat, k)
	}
	return key, nil
}

// DecodePublic parses a PEM PKIX Ed25519 public key.
func DecodePublic(data []byte) (ed25519.PublicKey, error) {
	b, err := onlyBlock(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	key, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T", ErrFormat, k)
	}
	return key, nil
}

// Stat is what identifies the contents of a key file without reading it:
// a reload whose file has the same Stat keeps the key already read.
type Stat struct {
	Dev, Ino uint64
	Size     int64
	ModNano  int64
}

// CheckPrivate checks what can be checked of a private key file without
// reading it (which a process that dropped its privileges may not be
// allowed to do): a regular file, of at most MaxFile bytes, that neither
// its group nor others can access.
func CheckPrivate(path string) (Stat, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stat{}, err
	}
	return checkPrivate(path, fi)
}

func checkPrivate(path string, fi fs.FileInfo) (Stat, error) {
	if !fi.Mode().IsRegular() {
		return Stat{}, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return Stat{}, fmt.Errorf("%s: mode %04o: %w", path, perm, ErrPermissive)
	}
	if fi.Size() > MaxFile {
		return Stat{}, fmt.Errorf("%s: %w: %d bytes, more than a key file's %d", path, ErrFormat, fi.Size(), MaxFile)
	}
	return statOf(fi), nil
}

// ReadPrivate reads and checks a private key file (CheckPrivate), and
// returns its key with the file's Stat.
func ReadPrivate(path string) (ed25519.PrivateKey, Stat, error) {
	data, fi, err := readBounded(path)
	if err != nil {
		return nil, Stat{}, err
	}
	st, err := checkPrivate(path, fi)
	if err != nil {
		return nil, Stat{}, err
	}
	key, err := DecodePrivate(data)
	if err != nil {
		return nil, Stat{}, fmt.Errorf("%s: %w", path, err)
	}
	return key, st, nil
}

// ReadPublic reads a public key file.
func ReadPublic(path string) (ed25519.PublicKey, error) {
	data, fi, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	key, err := DecodePublic(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// readBounded reads at most MaxFile+1 bytes of the file and stats the open
// file (so that the checks are about the file read, not a replacement).
func readBounded(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxFile {
		return nil, nil, fmt.Errorf("%s: %w: more than a key file's %d bytes", path, ErrFormat, MaxFile)
	}
	return data, fi, nil
}

// Generate makes a new key pair and writes it: the private key to private
// (mode 0600) and the public key to public (mode 0644). Neither file may
// exist already: a key is never overwritten. The modes are set when the
// files are created, whatever the umask, so the private key is never
// readable by others, not even for a moment.
func Generate(private, public string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	privPEM, err := EncodePrivate(priv)
	if err != nil {
		return nil, err
	}
	pubPEM, err := EncodePublic(pub)
	if err != nil {
		return nil, err
	}
	if err := create(private, privPEM, PrivateMode); err != nil {
		return nil, err
	}
	if err := create(public, pubPEM, PublicMode); err != nil {
		os.Remove(private)
		return nil, err
	}
	return pub, nil
}

// create writes a new file with exactly mode (O_EXCL: never an existing
// file, never through a symbolic link).
func create(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Chmod(mode) // the umask does not apply to fchmod
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// PublicPath is where Generate's callers put the public key of a private
// key file by default: the same name with ".pub" for its extension
// (/etc/ghostrouter/web.key: /etc/ghostrouter/web.pub).
func PublicPath(private string) string {
	ext := filepath.Ext(private)
	if ext == ".pub" || strings.ContainsRune(ext, '/') {
		ext = ""
	}
	return strings.TrimSuffix(private, ext) + ".pub"
}
