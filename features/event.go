package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Event types and sizes: struct mls_wake_event, mls_wake_sparse and mls_switch_event in
// bpf/capture.h.
const (
	EventWake       = 1 // dense: all 64 counts (the layout the scheduler's wake event starts with)
	EventSwitch     = 2
	EventWakeSparse = 5 // the capture probes' samples: only the nonzero counts

	WakeEventSize   = 32 + 4*NumBuckets
	SwitchEventSize = 24
	// WakeSparseHeaderSize is the fixed part of a sparse wake record; 4 bytes per nonzero
	// count follow.
	WakeSparseHeaderSize = 40
)

// WakeEvent is a decoded sample point: W woke while its previous CPU ran R.
type WakeEvent struct {
	PrevCPU  uint16
	WakerCPU uint16
	WTid     uint32
	RTid     uint32
	TsNs     uint64
	ROnCPUNs uint64
	Feats    [NumBuckets]uint32
}

// SwitchEvent is a decoded context switch on a CPU that had a pending sample.
type SwitchEvent struct {
	Voluntary bool
	CPU       uint16
	PrevTid   uint32
	NextTid   uint32
	TsNs      uint64
}

// ErrShortEvent is returned for a record too short for its type.
var ErrShortEvent = errors.New("event record too short")

// EventType returns the type byte of a raw record (0 when empty).
func EventType(raw []byte) uint8 {
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// DecodeWake fills e from a raw ring-buffer record. It does not allocate.
func DecodeWake(raw []byte, e *WakeEvent) error {
	if len(raw) < WakeEventSize {
		return fmt.Errorf("wake event: %w (%d < %d bytes)", ErrShortEvent, len(raw), WakeEventSize)
	}
	decodeWakeHeader(raw, e)
	le := binary.LittleEndian
	f := raw[32:WakeEventSize]
	for i := range e.Feats {
		e.Feats[i] = le.Uint32(f[4*i:])
	}
	return nil
}

// ErrBadEvent is returned for a record whose fields contradict each other.
var ErrBadEvent = errors.New("malformed event record")

// DecodeWakeSparse fills e from a raw sparse wake record (EventWakeSparse): the header, a
// 64-bit mask of the nonzero buckets, then their counts in increasing bucket order. It does
// not allocate.
func DecodeWakeSparse(raw []byte, e *WakeEvent) error {
	if len(raw) < WakeSparseHeaderSize {
		return fmt.Errorf("wake event: %w (%d < %d bytes)", ErrShortEvent, len(raw), WakeSparseHeaderSize)
	}
	le := binary.LittleEndian
	mask := le.Uint64(raw[32:])
	n := bits.OnesCount64(mask)
	if int(raw[1]) != n {
		return fmt.Errorf("wake event: %w: %d counts for a mask of %d buckets", ErrBadEvent, raw[1], n)
	}
	if len(raw) < WakeSparseHeaderSize+4*n {
		return fmt.Errorf("wake event: %w (%d < %d bytes)", ErrShortEvent, len(raw), WakeSparseHeaderSize+4*n)
	}
	decodeWakeHeader(raw, e)
	e.Feats = [NumBuckets]uint32{}
	vals := raw[WakeSparseHeaderSize:]
	for i := 0; mask != 0; i++ {
		b := bits.TrailingZeros64(mask) % NumBuckets
		mask &= mask - 1
		e.Feats[b] = le.Uint32(vals[4*i:])
	}
	return nil
}

// decodeWakeHeader reads the fields both wake layouts share (raw holds at least 32 bytes).
func decodeWakeHeader(raw []byte, e *WakeEvent) {
	le := binary.LittleEndian
	e.PrevCPU = le.Uint16(raw[2:])
	e.WakerCPU = le.Uint16(raw[4:])
	e.WTid = le.Uint32(raw[8:])
	e.RTid = le.Uint32(raw[12:])
	e.TsNs = le.Uint64(raw[16:])
	e.ROnCPUNs = le.Uint64(raw[24:])
}

// DecodeSwitch fills e from a raw ring-buffer record. It does not allocate.
func DecodeSwitch(raw []byte, e *SwitchEvent) error {
	if len(raw) < SwitchEventSize {
		return fmt.Errorf("switch event: %w (%d < %d bytes)", ErrShortEvent, len(raw), SwitchEventSize)
	}
	le := binary.LittleEndian
	e.Voluntary = raw[1] != 0
	e.CPU = le.Uint16(raw[2:])
	e.PrevTid = le.Uint32(raw[4:])
	e.NextTid = le.Uint32(raw[8:])
	e.TsNs = le.Uint64(raw[16:])
	return nil
}
