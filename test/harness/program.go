package harness

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// Program is the harness's test for a program rather than a test (the demo, `make demo`):
// it reports to a writer, Fatalf undoes everything and exits 1, and Close runs the cleanup
// (namespaces, processes, captures; artifacts kept only on failure or with KeepEnv=1).
type Program struct {
	name string
	w    io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	closed   bool
}

// NewProgram returns a harness for the program name, reporting to w. Call Close (deferred)
// when done; it must run as root like the tests (RequireRoot's checks are the caller's).
func NewProgram(name string, w io.Writer) (*H, *Program) {
	p := &Program{name: name, w: w}
	return newH(p), p
}

// Helper implements the harness's test interface.
func (p *Program) Helper() {}

// Name is the program's name (part of the artifact directory's name).
func (p *Program) Name() string { return p.name }

// Cleanup registers f to run at Close, last registered first.
func (p *Program) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// Failed reports whether Errorf or Fatalf was called.
func (p *Program) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Logf writes a line to the program's writer.
func (p *Program) Logf(format string, args ...any) { fmt.Fprintf(p.w, format+"\n", args...) }

// Errorf reports a failure and goes on.
func (p *Program) Errorf(format string, args ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Logf(format, args...)
}

// Fatalf reports a failure, undoes everything (Close) and exits with status 1.
func (p *Program) Fatalf(format string, args ...any) {
	p.Errorf(format, args...)
	p.Close()
	os.Exit(1)
}

// Close runs the cleanups once, last registered first.
func (p *Program) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	fs := p.cleanups
	p.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
