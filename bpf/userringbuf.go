package bpf

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// UserRingbuf writes samples into a BPF_MAP_TYPE_USER_RINGBUF map, which BPF programs read
// with bpf_user_ringbuf_drain. cilium/ebpf has no writer for it; this follows the kernel's
// layout (kernel/bpf/ringbuf.c) and libbpf's user_ring_buffer__reserve/submit:
//
//	mmap offset 0, one page, read-only:      consumer_pos (u64), advanced by the kernel
//	mmap offset page, one page, read-write:  producer_pos (u64), advanced by us
//	then the data area, mapped twice in a row, so a sample that wraps is contiguous
//
// Every sample is an 8-byte header {u32 len; u32 pad} and the payload, rounded up to 8 bytes.
// Reserve writes len|BUSY and publishes the new producer_pos (store-release); Submit clears
// BUSY (store-release). The kernel stops draining at the first BUSY sample, so samples become
// visible in reservation order.
//
// A UserRingbuf has one producer: its methods must not be called concurrently.
type UserRingbuf struct {
	consumer []byte // one page, read-only
	producer []byte // producer page + 2 * size
	data     []byte // producer[page:]
	consPos  *uint64
	prodPos  *uint64
	mask     uint64
}

const (
	ringbufHdrSize    = 8
	ringbufBusyBit    = 1 << 31
	ringbufDiscardBit = 1 << 30
)

// ErrRingFull means the consumer has not made room for the sample yet.
var ErrRingFull = errors.New("user ring buffer full")

// NewUserRingbuf maps m, which must be a BPF_MAP_TYPE_USER_RINGBUF.
func NewUserRingbuf(m *ebpf.Map) (*UserRingbuf, error) {
	if m.Type() != ebpf.UserRingbuf {
		return nil, fmt.Errorf("map %s is %s, not a user ring buffer", m.String(), m.Type())
	}
	page := os.Getpagesize()
	size := int(m.MaxEntries())
	if size < page || size&(size-1) != 0 {
		return nil, fmt.Errorf("user ring buffer size %d: not a power of two >= page size", size)
	}
	cons, err := unix.Mmap(m.FD(), 0, page, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap user ring buffer consumer page: %w", err)
	}
	prod, err := unix.Mmap(m.FD(), int64(page), page+2*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Munmap(cons)
		return nil, fmt.Errorf("mmap user ring buffer producer and data: %w", err)
	}
	return &UserRingbuf{
		consumer: cons,
		producer: prod,
		data:     prod[page:],
		consPos:  (*uint64)(unsafe.Pointer(&cons[0])),
		prodPos:  (*uint64)(unsafe.Pointer(&prod[0])),
		mask:     uint64(size - 1),
	}, nil
}

// Size is the data area's size in bytes.
func (r *UserRingbuf) Size() int { return int(r.mask + 1) }

// Free returns the bytes the producer may still reserve (headers included).
func (r *UserRingbuf) Free() int {
	return int(r.mask + 1 - (atomic.LoadUint64(r.prodPos) - atomic.LoadUint64(r.consPos)))
}

// Sample is a reserved, not yet submitted sample.
type Sample struct {
	hdr  *uint32
	Data []byte // the payload: exactly the reserved size, valid until Submit or Discard
}

// Reserve makes room for a payload of n bytes. It does not allocate.
func (r *UserRingbuf) Reserve(n int) (Sample, error) {
	if n <= 0 || n > int(r.mask+1)-ringbufHdrSize || n >= ringbufDiscardBit {
		return Sample{}, fmt.Errorf("user ring buffer: sample of %d bytes does not fit", n)
	}
	total := uint64(n+ringbufHdrSize+7) &^ 7
	cons := atomic.LoadUint64(r.consPos)
	prod := atomic.LoadUint64(r.prodPos) // we are its only writer
	if r.mask+1-(prod-cons) < total {
		return Sample{}, ErrRingFull
	}
	off := prod & r.mask
	hdr := (*uint32)(unsafe.Pointer(&r.data[off]))
	atomic.StoreUint32(hdr, uint32(n)|ringbufBusyBit)
	*(*uint32)(unsafe.Pointer(&r.data[off+4])) = 0
	atomic.StoreUint64(r.prodPos, prod+total)
	return Sample{hdr: hdr, Data: r.data[off+ringbufHdrSize : off+ringbufHdrSize+uint64(n) : off+ringbufHdrSize+uint64(n)]}, nil
}

// Submit hands a reserved sample to the consumer.
func (r *UserRingbuf) Submit(s Sample) {
	atomic.StoreUint32(s.hdr, atomic.LoadUint32(s.hdr)&^ringbufBusyBit)
}

// Discard releases a reserved sample; the consumer skips it.
func (r *UserRingbuf) Discard(s Sample) {
	atomic.StoreUint32(s.hdr, (atomic.LoadUint32(s.hdr)&^ringbufBusyBit)|ringbufDiscardBit)
}

// Write reserves, copies p and submits.
func (r *UserRingbuf) Write(p []byte) error {
	s, err := r.Reserve(len(p))
	if err != nil {
		return err
	}
	copy(s.Data, p)
	r.Submit(s)
	return nil
}

// Close unmaps the ring; the map itself stays open.
func (r *UserRingbuf) Close() error {
	var err error
	if r.producer != nil {
		err = unix.Munmap(r.producer)
		r.producer, r.data = nil, nil
	}
	if r.consumer != nil {
		err = errors.Join(err, unix.Munmap(r.consumer))
		r.consumer = nil
	}
	return err
}
