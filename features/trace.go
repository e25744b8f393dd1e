package features

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
)

// The trace file format (docs/TRACE_FORMAT.md): a header, blocks of samples each with a
// CRC32C, and a trailer with the capture's accounting. Written and read as a stream.
const (
	TraceMagic = "MLSTRACE"
	// TraceVersion 2 is feature schema v2: each sample also records R's scheduling state
	// (SchedState). Version 1 files (the counts and the on-CPU time only) are refused.
	TraceVersion = 2

	maxHeaderBody  = 64 << 10
	maxString      = 4 << 10
	MaxBlockBytes  = 1 << 20 // a block's payload; the reader refuses larger ones
	flushBytes     = 64 << 10
	minRecordBytes = 8 + 11     // bitmap plus at least eleven one-byte fields
	blockTag       = 0x4b434c42 // "BLCK"
	trailerTag     = 0x444e4554 // "TEND"
	maxTrailer     = 256
	minTrailer     = 2 // fields: Samples and Positives, which the reader checks

	// MaxHorizonNs bounds H, the label's horizon, in traces and models alike (capture
	// --horizon accepts up to one minute).
	MaxHorizonNs = 60_000_000_000
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors a trace reader returns, wrapped in a *TraceError naming the offset.
var (
	ErrBadMagic       = errors.New("not an mlsched trace (bad magic)")
	ErrVersion        = errors.New("unsupported trace version")
	ErrSchemaMismatch = errors.New("trace feature schema differs from this mlsched's")
	ErrChecksum       = errors.New("checksum mismatch")
	ErrTruncated      = errors.New("file truncated")
	ErrCorrupt        = errors.New("corrupt data")
	ErrTrailingData   = errors.New("data after the trailer")
)

// TraceError is a reader error at a byte offset of the file.
type TraceError struct {
	Offset int64
	Err    error
	Detail string
}

func (e *TraceError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("trace offset %d: %v: %s", e.Offset, e.Err, e.Detail)
	}
	return fmt.Sprintf("trace offset %d: %v", e.Offset, e.Err)
}

func (e *TraceError) Unwrap() error { return e.Err }

// TraceHeader describes a capture.
type TraceHeader struct {
	Version       uint16
	SchemaID      uint64
	HorizonNs     uint64
	StartUnixNs   int64
	StartKtimeNs  uint64 // monotonic clock at the start; sample times are relative to it
	NumCPU        uint32
	KernelRelease string
	Hostname      string
	Command       string
}

// TraceSummary is the trailer: the capture's accounting, so that no loss is silent.
// The writer fills Samples and Positives itself.
type TraceSummary struct {
	Samples      uint64 `json:"samples"` // samples in the file
	Positives    uint64 `json:"positives"`
	DurationNs   uint64 `json:"duration_ns"`
	WakeTotal    uint64 `json:"wake_total"`     // wakeups seen by the probes
	WakeIdle     uint64 `json:"wake_idle"`      // previous CPU idle: nothing to decide
	WakeSkipped  uint64 `json:"wake_skipped"`   // same task, mlsched's own, outside --only-command, or sampled out
	RingDrops    uint64 `json:"ring_drops"`     // wake events lost to a full ring buffer
	SwitchDrops  uint64 `json:"switch_drops"`   // switch events lost to a full ring buffer
	LostSwitch   uint64 `json:"lost_switch"`    // samples dropped: R's switch-out was not seen
	Unresolved   uint64 `json:"unresolved"`     // samples dropped: outcome unknown when the capture ended
	FeatTakeover uint64 `json:"feat_takeovers"` // feature slots taken over from a live thread (state lost)
	DecodeErrors uint64 `json:"decode_errors"`  // ring-buffer records that could not be decoded
	WakeEmitted  uint64 `json:"wake_emitted"`   // wake events the probes sent to user space
	// Samples lost to a failed write (a full disk): the trace was cut back to its last whole
	// block and ended with this trailer. Readers before it was added ignore it.
	WriteLost uint64 `json:"write_lost,omitempty"`
}

// Accounted reports whether every wakeup the probes saw is accounted for: sent, dropped or
// skipped, and every sent one either a sample or a counted loss.
func (s *TraceSummary) Accounted() error {
	if got := s.WakeIdle + s.WakeSkipped + s.RingDrops + s.WakeEmitted; got != s.WakeTotal {
		return fmt.Errorf("%d wakeups seen, %d accounted (idle+skipped+dropped+emitted)", s.WakeTotal, got)
	}
	if got := s.Samples + s.LostSwitch + s.Unresolved + s.DecodeErrors + s.WriteLost; got != s.WakeEmitted {
		return fmt.Errorf("%d wake events emitted, %d accounted (samples+lost+unresolved+undecodable+lost to a failed write)", s.WakeEmitted, got)
	}
	return nil
}

func (s *TraceSummary) fields() []*uint64 {
	return []*uint64{&s.Samples, &s.Positives, &s.DurationNs, &s.WakeTotal, &s.WakeIdle,
		&s.WakeSkipped, &s.RingDrops, &s.SwitchDrops, &s.LostSwitch, &s.Unresolved,
		&s.FeatTakeover, &s.DecodeErrors, &s.WakeEmitted, &s.WriteLost}
}

// ErrWrite marks the errors of a TraceWriter's writes (a full disk, an I/O error), which a
// capture may survive by cutting the file back to its last whole block (TraceWriter.Durable).
var ErrWrite = errors.New("write trace")

// blockEnd is where a block ended in the stream, and the samples up to it.
type blockEnd struct {
	off                int64
	samples, positives uint64
}

// keptEnds is how many block ends a TraceWriter remembers: enough for any buffering between
// it and the file (a capture's is 256 KiB, four full blocks).
const keptEnds = 64

// TraceWriter writes a trace as a stream, a checksummed block at a time.
type TraceWriter struct {
	w       io.Writer
	hdr     TraceHeader
	buf     []byte // block under construction: 16-byte block header + payload
	nrec    uint32
	summary TraceSummary
	err     error
	off     int64              // bytes handed to w
	ends    [keptEnds]blockEnd // the latest block ends, a ring; ends[0] is the header's at first
	nends   int
}

// NewTraceWriter writes the header and returns a writer for the samples.
func NewTraceWriter(w io.Writer, h TraceHeader) (*TraceWriter, error) {
	h.Version = TraceVersion
	if len(h.KernelRelease) > maxString || len(h.Hostname) > maxString || len(h.Command) > maxString {
		return nil, fmt.Errorf("trace header: string longer than %d bytes", maxString)
	}
	body := binary.LittleEndian.AppendUint64(nil, h.SchemaID)
	body = binary.LittleEndian.AppendUint64(body, h.HorizonNs)
	body = binary.LittleEndian.AppendUint64(body, uint64(h.StartUnixNs))
	body = binary.LittleEndian.AppendUint64(body, h.StartKtimeNs)
	body = binary.LittleEndian.AppendUint32(body, h.NumCPU)
	for _, s := range []string{h.KernelRelease, h.Hostname, h.Command} {
		body = binary.LittleEndian.AppendUint16(body, uint16(len(s)))
		body = append(body, s...)
	}
	out := append([]byte(TraceMagic), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(out[8:], h.Version)
	binary.LittleEndian.PutUint32(out[12:], uint32(len(body)))
	out = append(out, body...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	if _, err := w.Write(out); err != nil {
		return nil, fmt.Errorf("write trace header: %w: %w", ErrWrite, err)
	}
	tw := &TraceWriter{w: w, hdr: h, buf: make([]byte, 16, flushBytes+1024), off: int64(len(out))}
	tw.addEnd()
	return tw, nil
}

func (t *TraceWriter) addEnd() {
	t.ends[t.nends%keptEnds] = blockEnd{t.off, t.summary.Samples, t.summary.Positives}
	t.nends++
}

// Durable says where to cut a stream of which only the first written bytes reached the file
// (after a failed write): the end of the last whole block within them, and the samples and
// positives up to it; ok is false when that end is older than the writer remembers, or the
// header itself did not make it.
func (t *TraceWriter) Durable(written int64) (off int64, samples, positives uint64, ok bool) {
	for i := t.nends - 1; i >= 0 && i >= t.nends-keptEnds; i-- {
		if e := t.ends[i%keptEnds]; e.off <= written {
			return e.off, e.samples, e.positives, true
		}
	}
	return 0, 0, 0, false
}

// Write appends a sample; its TsNs is stored relative to the header's StartKtimeNs.
func (t *TraceWriter) Write(s *Sample) error {
	if t.err != nil {
		return t.err
	}
	t.buf = appendSample(t.buf, s, t.hdr.StartKtimeNs)
	t.nrec++
	t.summary.Samples++
	t.summary.Positives += uint64(s.Label & 1)
	if len(t.buf)-16 >= flushBytes {
		return t.Flush()
	}
	return nil
}

// Samples returns the number of samples written so far, and how many are positive.
func (t *TraceWriter) Samples() (n, positives uint64) { return t.summary.Samples, t.summary.Positives }

// Flush writes the current block, if it has samples.
func (t *TraceWriter) Flush() error {
	if t.err != nil || t.nrec == 0 {
		return t.err
	}
	payload := len(t.buf) - 16
	binary.LittleEndian.PutUint32(t.buf[0:], blockTag)
	binary.LittleEndian.PutUint32(t.buf[4:], t.nrec)
	binary.LittleEndian.PutUint32(t.buf[8:], uint32(payload))
	c := crc32.Update(crc32.Checksum(t.buf[4:12], castagnoli), castagnoli, t.buf[16:])
	binary.LittleEndian.PutUint32(t.buf[12:], c)
	if _, err := t.w.Write(t.buf); err != nil {
		t.err = fmt.Errorf("write trace block: %w: %w", ErrWrite, err)
		return t.err
	}
	t.off += int64(len(t.buf))
	t.addEnd()
	t.buf = t.buf[:16]
	t.nrec = 0
	return nil
}

// Close flushes the last block and writes the trailer with s (whose Samples and Positives are
// replaced by the writer's own count). It does not close the underlying writer.
func (t *TraceWriter) Close(s TraceSummary) error {
	if err := t.Flush(); err != nil {
		return err
	}
	s.Samples, s.Positives = t.summary.Samples, t.summary.Positives
	if _, err := t.w.Write(Trailer(s)); err != nil {
		t.err = fmt.Errorf("write trace trailer: %w: %w", ErrWrite, err)
		return t.err
	}
	t.err = errors.New("trace writer closed")
	return nil
}

// Trailer is the trailer block for s, as Close writes it (Close fills Samples and Positives
// from its own count; a capture cut back after a failed write writes this itself, with the
// counts TraceWriter.Durable gives).
func Trailer(s TraceSummary) []byte {
	f := s.fields()
	out := make([]byte, 16, 16+8*len(f))
	for _, p := range f {
		out = binary.LittleEndian.AppendUint64(out, *p)
	}
	binary.LittleEndian.PutUint32(out[0:], trailerTag)
	binary.LittleEndian.PutUint32(out[4:], uint32(len(f)))
	binary.LittleEndian.PutUint32(out[8:], uint32(8*len(f)))
	c := crc32.Checksum(out[4:12], castagnoli)
	binary.LittleEndian.PutUint32(out[12:], crc32.Update(c, castagnoli, out[16:]))
	return out
}

func appendSample(b []byte, s *Sample, base uint64) []byte {
	var ts uint64
	if s.TsNs > base {
		ts = s.TsNs - base
	}
	b = binary.AppendUvarint(b, ts)
	b = append(b, s.Label&1|uint8(s.Outcome&3)<<1)
	b = binary.AppendUvarint(b, s.LeaveNs)
	b = binary.AppendUvarint(b, uint64(s.PrevCPU))
	b = binary.AppendUvarint(b, uint64(s.WakerCPU))
	b = binary.AppendUvarint(b, uint64(s.WTid))
	b = binary.AppendUvarint(b, uint64(s.RTid))
	b = binary.AppendUvarint(b, s.ROnCPUNs)
	b = binary.AppendUvarint(b, s.RStintNs)
	b = binary.AppendUvarint(b, uint64(s.RVol))
	b = binary.AppendUvarint(b, s.RGapNs)
	counts := Counts(&s.Feats)
	var bitmap uint64
	for i, v := range counts {
		if v != 0 {
			bitmap |= 1 << i
		}
	}
	b = binary.LittleEndian.AppendUint64(b, bitmap)
	for _, v := range counts {
		if v != 0 {
			b = binary.AppendUvarint(b, uint64(v))
		}
	}
	return b
}

// TraceReader reads a trace as a stream in constant memory. It never panics on bad input and
// never allocates more than one maximum-size block.
type TraceReader struct {
	r       *bufio.Reader
	off     int64 // offset of the next unread byte
	hdr     TraceHeader
	block   []byte
	pos     int    // next record in block
	left    uint32 // records left in block
	blkOff  int64  // file offset of the block's payload
	summary *TraceSummary
	done    bool
	// What the blocks held, checked against the trailer: a block cut out of or repeated in
	// the middle of a file has valid checksums of its own.
	read, positives uint64
}

// NewTraceReader reads and checks the header. A trace of another feature schema is refused
// with ErrSchemaMismatch; use NewTraceReaderAnySchema to look at it anyway.
func NewTraceReader(r io.Reader) (*TraceReader, error) {
	t, err := NewTraceReaderAnySchema(r)
	if err != nil {
		return nil, err
	}
	if t.hdr.SchemaID != SchemaID() {
		return nil, &TraceError{Offset: 16, Err: ErrSchemaMismatch, Detail: fmt.Sprintf(
			"trace has %s, this mlsched has %s: capture it again with this version",
			FormatSchemaID(t.hdr.SchemaID), FormatSchemaID(SchemaID()))}
	}
	return t, nil
}

// NewTraceReaderAnySchema reads and checks the header, accepting any feature schema.
func NewTraceReaderAnySchema(r io.Reader) (*TraceReader, error) {
	t := &TraceReader{r: bufio.NewReaderSize(r, 64<<10)}
	var fixed [16]byte
	if err := t.readFull(fixed[:]); err != nil {
		if errors.Is(err, ErrTruncated) && t.off == 0 {
			return nil, &TraceError{Offset: 0, Err: ErrTruncated, Detail: "empty file"}
		}
		return nil, err
	}
	if string(fixed[:8]) != TraceMagic {
		return nil, &TraceError{Offset: 0, Err: ErrBadMagic}
	}
	le := binary.LittleEndian
	t.hdr.Version = le.Uint16(fixed[8:])
	if t.hdr.Version != TraceVersion {
		detail := fmt.Sprintf("version %d, this mlsched reads version %d", t.hdr.Version, TraceVersion)
		if t.hdr.Version < TraceVersion {
			detail += fmt.Sprintf(" (version %d has feature schema v1, without R's scheduling state): capture it again with this mlsched (`mlsched capture`)", t.hdr.Version)
		} else {
			detail += ": this mlsched is older than the one that captured it"
		}
		return nil, &TraceError{Offset: 8, Err: ErrVersion, Detail: detail}
	}
	if flags := le.Uint16(fixed[10:]); flags != 0 {
		return nil, &TraceError{Offset: 10, Err: ErrCorrupt, Detail: fmt.Sprintf("header flags %#x (reserved, 0 in version %d)", flags, TraceVersion)}
	}
	n := le.Uint32(fixed[12:])
	if n < 36 || n > maxHeaderBody {
		return nil, &TraceError{Offset: 12, Err: ErrCorrupt, Detail: fmt.Sprintf("header length %d", n)}
	}
	body := make([]byte, n+4)
	if err := t.readFull(body); err != nil {
		return nil, err
	}
	crc := crc32.Update(crc32.Checksum(fixed[:], castagnoli), castagnoli, body[:n])
	if crc != le.Uint32(body[n:]) {
		return nil, &TraceError{Offset: 16 + int64(n), Err: ErrChecksum, Detail: "header"}
	}
	h := &t.hdr
	h.SchemaID = le.Uint64(body[0:])
	h.HorizonNs = le.Uint64(body[8:])
	h.StartUnixNs = int64(le.Uint64(body[16:]))
	h.StartKtimeNs = le.Uint64(body[24:])
	h.NumCPU = le.Uint32(body[32:])
	if h.HorizonNs == 0 || h.HorizonNs > MaxHorizonNs {
		return nil, &TraceError{Offset: 24, Err: ErrCorrupt, Detail: fmt.Sprintf("horizon %d ns (a capture's is in (0, 1 min])", h.HorizonNs)}
	}
	rest := body[36:n]
	for _, dst := range []*string{&h.KernelRelease, &h.Hostname, &h.Command} {
		if len(rest) < 2 || int(le.Uint16(rest)) > len(rest)-2 {
			return nil, &TraceError{Offset: 16 + int64(n) - int64(len(rest)), Err: ErrCorrupt, Detail: "header string"}
		}
		l := int(le.Uint16(rest))
		*dst = string(rest[2 : 2+l])
		rest = rest[2+l:]
	}
	return t, nil
}

// Header returns the trace's header.
func (t *TraceReader) Header() TraceHeader { return t.hdr }

// Summary returns the trailer; nil until Next has returned io.EOF.
func (t *TraceReader) Summary() *TraceSummary { return t.summary }

// Offset is the number of bytes consumed so far.
func (t *TraceReader) Offset() int64 { return t.off }

func (t *TraceReader) readFull(b []byte) error {
	n, err := io.ReadFull(t.r, b)
	t.off += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &TraceError{Offset: t.off, Err: ErrTruncated, Detail: "no trailer: the capture did not finish (the samples before this point are intact and `mlsched inspect` shows them; train and eval need a whole trace: capture again)"}
	}
	if err != nil {
		return fmt.Errorf("read trace at offset %d: %w", t.off, err)
	}
	return nil
}

// Next reads the next sample into s. It returns io.EOF after the trailer, and a *TraceError
// for any damage; the samples returned before an error are intact (each block is checked
// before any of its samples is returned).
func (t *TraceReader) Next(s *Sample) error {
	for t.left == 0 {
		if t.done {
			return io.EOF
		}
		if err := t.nextBlock(); err != nil {
			return err
		}
	}
	n, err := decodeSample(t.block[t.pos:], s, t.hdr.StartKtimeNs)
	if err != nil {
		return &TraceError{Offset: t.blkOff + int64(t.pos), Err: ErrCorrupt, Detail: err.Error()}
	}
	t.pos += n
	t.left--
	t.read++
	t.positives += uint64(s.Label)
	if t.left == 0 && t.pos != len(t.block) {
		return &TraceError{Offset: t.blkOff + int64(t.pos), Err: ErrCorrupt, Detail: "bytes left over in block"}
	}
	return nil
}

func (t *TraceReader) nextBlock() error {
	start := t.off
	var bh [16]byte
	if err := t.readFull(bh[:]); err != nil {
		return err
	}
	le := binary.LittleEndian
	tag, count, size := le.Uint32(bh[0:]), le.Uint32(bh[4:]), le.Uint32(bh[8:])
	switch tag {
	case blockTag:
		if size > MaxBlockBytes || count == 0 || uint64(count)*minRecordBytes > uint64(size) {
			return &TraceError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("block of %d records in %d bytes", count, size)}
		}
	case trailerTag:
		// In 64 bits: 8*count in 32 wraps, and a count of 2^29 would pass as size 0.
		if size > maxTrailer || uint64(size) != 8*uint64(count) || count < minTrailer {
			return &TraceError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("trailer of %d fields in %d bytes", count, size)}
		}
	default:
		return &TraceError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf("unknown block tag %#x", tag)}
	}
	if cap(t.block) < int(size) {
		t.block = make([]byte, size, max(size, flushBytes+1024))
	}
	t.block = t.block[:size]
	if err := t.readFull(t.block); err != nil {
		return err
	}
	crc := crc32.Update(crc32.Checksum(bh[4:12], castagnoli), castagnoli, t.block)
	if crc != le.Uint32(bh[12:]) {
		return &TraceError{Offset: start, Err: ErrChecksum, Detail: "block"}
	}
	if tag == trailerTag {
		var sum TraceSummary
		f := sum.fields()
		for i := 0; i < int(count) && i < len(f); i++ { // newer writers may add fields
			*f[i] = le.Uint64(t.block[8*i:])
		}
		if sum.Samples != t.read || sum.Positives != t.positives {
			return &TraceError{Offset: start, Err: ErrCorrupt, Detail: fmt.Sprintf(
				"the trailer counts %d samples (%d positive), the blocks hold %d (%d): a block is missing or repeated; capture again",
				sum.Samples, sum.Positives, t.read, t.positives)}
		}
		// The trailer is the end: anything after it is an error, not silently ignored.
		if _, err := t.r.ReadByte(); err == nil {
			return &TraceError{Offset: t.off, Err: ErrTrailingData}
		} else if err != io.EOF {
			return fmt.Errorf("read trace at offset %d: %w", t.off, err)
		}
		t.summary = &sum
		t.done = true
		return nil
	}
	t.blkOff = start + 16
	t.pos = 0
	t.left = count
	return nil
}

func decodeSample(b []byte, s *Sample, base uint64) (int, error) {
	p := 0
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b[p:])
		if n <= 0 {
			return 0, false
		}
		p += n
		return v, true
	}
	ts, ok := uv()
	if !ok {
		return 0, errors.New("bad timestamp")
	}
	if ts > ^uint64(0)-base {
		return 0, errors.New("timestamp out of range")
	}
	s.TsNs = ts + base
	if p >= len(b) {
		return 0, errors.New("short record")
	}
	lb := b[p]
	p++
	s.Label, s.Outcome = lb&1, Outcome(lb>>1&3)
	if lb>>3 != 0 || s.Outcome == 0 || (s.Label == 1) != (s.Outcome == OutcomeVoluntary) {
		return 0, fmt.Errorf("bad label byte %#x", lb)
	}
	var v [9]uint64
	for i := range v {
		if v[i], ok = uv(); !ok {
			return 0, errors.New("bad varint")
		}
	}
	if v[1] > 0xffff || v[2] > 0xffff || v[3] > 0xffffffff || v[4] > 0xffffffff || v[7] > VolOne {
		return 0, errors.New("field out of range")
	}
	s.LeaveNs, s.PrevCPU, s.WakerCPU, s.WTid, s.RTid, s.ROnCPUNs =
		v[0], uint16(v[1]), uint16(v[2]), uint32(v[3]), uint32(v[4]), v[5]
	s.RStintNs, s.RVol, s.RGapNs = v[6], uint32(v[7]), v[8]
	if len(b)-p < 8 {
		return 0, errors.New("short record")
	}
	bitmap := binary.LittleEndian.Uint64(b[p:])
	p += 8
	s.Feats = [NumInputs]uint32{}
	st := s.State()
	SetExtras(&s.Feats, &st)
	for bm := bitmap; bm != 0; bm &= bm - 1 {
		i := bits.TrailingZeros64(bm)
		f, ok := uv()
		if !ok || f == 0 || f > MaxCount {
			return 0, fmt.Errorf("bad feature %d", i)
		}
		s.Feats[i] = uint32(f)
	}
	return p, nil
}
