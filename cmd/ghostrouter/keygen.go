package main

import (
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"fmt"
	"io"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
)

// cmdKeygen writes a new Ed25519 key pair for a broadcast cluster's
// announcements: the private key (mode 0600) for the appliance's
// announce_key_file, the public key (0644) for every server's
// `ghostnode run --key-file`. It never overwrites a file.
func cmdKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	private := fs.String("private", "", "`FILE` for the private key (the cluster's announce_key_file)")
	public := fs.String("public", "", "`FILE` for the public key (default: FILE with .pub for its extension)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *private == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: ghostrouter keygen --private FILE [--public FILE]")
		return 2
	}
	if *public == "" {
		*public = keyfile.PublicPath(*private)
	}
	pub, err := keyfile.Generate(*private, *public)
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter keygen: %v\n", err)
		return 1
	}
	sum := sha256.Sum256(pub)
	fmt.Fprintf(stdout, "private key %s (mode 0600): name it in the cluster's announce_key_file\n", *private)
	fmt.Fprintf(stdout, "public key  %s (mode 0644): give it to every server's ghostnode run --key-file\n", *public)
	fmt.Fprintf(stdout, "fingerprint SHA256:%s\n", base64.RawStdEncoding.EncodeToString(sum[:]))
	return 0
}
