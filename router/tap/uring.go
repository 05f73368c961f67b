package tap

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring (Linux 5.6 and later) for one thing: writing a batch's frames to a
// TAP in one system call, in order. Each receive queue owns one ring and uses it from its
// own goroutine only. A TAP descriptor is non-blocking, so io_uring runs each write inline
// while it submits it: the frames reach the kernel one after the other inside one
// io_uring_enter, and the tasks their delivery wakes (on a kernel without forced
// preemption) run only once the whole batch is in, as in the kernel's own softirq batch.
// With plain write(2) calls, the task the first frame wakes may run, and act, before the
// second is written: a client may read a response and close before the FIN that followed
// it is written. When the kernel refuses io_uring (too old, io_uring_disabled, a seccomp
// filter), the endpoint writes frame by frame (write(2)).

// io_uring ABI (include/uapi/linux/io_uring.h).
const (
	uringOffSQRing   = 0
	uringOffSQEs     = 0x10000000
	uringOpWrite     = 23
	uringEnterGetEvt = 1
	uringFeatSingle  = 1 // IORING_FEAT_SINGLE_MMAP
	uringSQELen      = 64
	uringCQELen      = 16
)

type uringSQOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type uringCQOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  uringSQOffsets
	cqOff                                                                  uringCQOffsets
}

type uringSQE struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	rwFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// uring is one ring. Its memory is the kernel's (mmap), never Go's.
type uring struct {
	fd      int
	ring    []byte // the SQ and CQ rings (one mapping)
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray unsafe.Pointer // [entries]uint32
	sqes    unsafe.Pointer // [entries]uringSQE
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    unsafe.Pointer // [entries]uringCQE
	entries uint32
}

// newUring sets up a ring of at least entries submission slots.
func newUring(entries uint32) (*uring, error) {
	var p uringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	u := &uring{fd: int(fd), entries: p.sqEntries}
	if p.features&uringFeatSingle == 0 {
		u.close()
		return nil, fmt.Errorf("io_uring: no single mmap (kernel older than 5.4)")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uringCQELen)
	ring, err := unix.Mmap(u.fd, uringOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		u.close()
		return nil, fmt.Errorf("io_uring: mmap rings: %w", err)
	}
	u.ring = ring
	sqes, err := unix.Mmap(u.fd, uringOffSQEs, int(p.sqEntries*uringSQELen), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		u.close()
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	u.sqeMem = sqes
	base := unsafe.Pointer(&ring[0])
	u.sqHead = (*uint32)(unsafe.Add(base, p.sqOff.head))
	u.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	u.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	u.sqArray = unsafe.Add(base, p.sqOff.array)
	u.sqes = unsafe.Pointer(&sqes[0])
	u.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	u.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	u.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	u.cqes = unsafe.Add(base, p.cqOff.cqes)
	return u, nil
}

func (u *uring) close() {
	if u.sqeMem != nil {
		unix.Munmap(u.sqeMem)
	}
	if u.ring != nil {
		unix.Munmap(u.ring)
	}
	unix.Close(u.fd)
}

// writeAll writes bufs to fd, in order, in one io_uring_enter, and waits for them; res[i]
// is write's result for bufs[i] (bytes written, or -errno). len(bufs) <= u.entries. The
// buffers must stay valid (and are read by the kernel) until it returns.
func (u *uring) writeAll(fd int, bufs [][]byte, res []int32) error {
	n := uint32(len(bufs))
	tail := atomic.LoadUint32(u.sqTail)
	for i, b := range bufs {
		idx := (tail + uint32(i)) & u.sqMask
		sqe := (*uringSQE)(unsafe.Add(u.sqes, uintptr(idx)*uringSQELen))
		*sqe = uringSQE{opcode: uringOpWrite, fd: int32(fd), off: ^uint64(0),
			addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), len: uint32(len(b)), userData: uint64(i)}
		*(*uint32)(unsafe.Add(u.sqArray, uintptr(idx)*4)) = idx
	}
	atomic.StoreUint32(u.sqTail, tail+n)
	done := uint32(0)
	for submitted := uint32(0); done < n; {
		toSubmit := n - submitted
		// RawSyscall6, as rawRead: the writes run inline and never block (a TAP's send
		// buffer is unlimited), so the call is bounded by the batch's frames.
		r, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), uintptr(toSubmit), uintptr(n-done), uringEnterGetEvt, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		submitted += uint32(r)
		head, ctail := atomic.LoadUint32(u.cqHead), atomic.LoadUint32(u.cqTail)
		for ; head != ctail; head++ {
			cqe := (*uringCQE)(unsafe.Add(u.cqes, uintptr(head&u.cqMask)*uringCQELen))
			if cqe.userData < uint64(n) {
				res[cqe.userData] = cqe.res
			}
			done++
		}
		atomic.StoreUint32(u.cqHead, head)
	}
	return nil
}
