package features

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Event types and sizes: struct mls_wake_event and mls_switch_event in bpf/capture.h.
const (
	EventWake   = 1
	EventSwitch = 2

	WakeEventSize   = 32 + 4*NumBuckets
	SwitchEventSize = 24
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
	le := binary.LittleEndian
	e.PrevCPU = le.Uint16(raw[2:])
	e.WakerCPU = le.Uint16(raw[4:])
	e.WTid = le.Uint32(raw[8:])
	e.RTid = le.Uint32(raw[12:])
	e.TsNs = le.Uint64(raw[16:])
	e.ROnCPUNs = le.Uint64(raw[24:])
	f := raw[32:WakeEventSize]
	for i := range e.Feats {
		e.Feats[i] = le.Uint32(f[4*i:])
	}
	return nil
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
