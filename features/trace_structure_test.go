package features

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

// traceParts splits a trace into its header (with its CRC) and its blocks, the trailer last,
// each with its 16-byte block header; whatever does not parse as a block is in rest.
func traceParts(b []byte) (hdr []byte, blocks [][]byte, rest []byte) {
	le := binary.LittleEndian
	if len(b) < 16 {
		return nil, nil, b
	}
	n := 16 + int(le.Uint32(b[12:])) + 4
	if n > len(b) || n < 16 {
		return nil, nil, b
	}
	hdr, b = b[:n], b[n:]
	for len(b) >= 16 {
		end := 16 + int(le.Uint32(b[8:]))
		if end > len(b) || end < 16 {
			break
		}
		blocks, b = append(blocks, b[:end]), b[end:]
	}
	return hdr, blocks, b
}

// resealTrace recomputes the header's and every block's CRC32C in place, so that a test (or
// the fuzzer) reaches the checks behind the checksums.
func resealTrace(b []byte) []byte {
	le := binary.LittleEndian
	hdr, blocks, _ := traceParts(b)
	if hdr == nil {
		return b
	}
	n := len(hdr) - 4
	le.PutUint32(hdr[n:], crc32.Checksum(hdr[:n], castagnoli))
	for _, blk := range blocks {
		c := crc32.Update(crc32.Checksum(blk[4:12], castagnoli), castagnoli, blk[16:])
		le.PutUint32(blk[12:], c)
	}
	return b
}

func joinParts(hdr []byte, blocks ...[]byte) []byte {
	out := append([]byte(nil), hdr...)
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out
}

// A trace of several sample blocks, checked to have them.
func multiBlockTrace(t *testing.T) (data []byte, hdr []byte, samples [][]byte, trailer []byte) {
	t.Helper()
	data, _ = writeTrace(t, 6000, 11)
	hdr, blocks, rest := traceParts(data)
	if len(rest) != 0 || len(blocks) < 4 {
		t.Fatalf("test trace: %d blocks, %d bytes left over; want >= 3 sample blocks and a trailer", len(blocks), len(rest))
	}
	return data, hdr, blocks[:len(blocks)-1], blocks[len(blocks)-1]
}

// A block cut out of the middle of a trace, or repeated, has valid checksums of its own: only
// the trailer's counts can tell, and the reader checks them.
func TestTraceMissingOrRepeatedBlock(t *testing.T) {
	_, hdr, blocks, trailer := multiBlockTrace(t)
	for name, data := range map[string][]byte{
		"missing":   joinParts(hdr, append(append([][]byte{blocks[0]}, blocks[2:]...), trailer)...),
		"repeated":  joinParts(hdr, append(append([][]byte{blocks[0], blocks[1], blocks[1]}, blocks[2:]...), trailer)...),
		"reordered": joinParts(hdr, append(append([][]byte{blocks[1], blocks[0]}, blocks[2:]...), trailer)...),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := readAll(data)
			if name == "reordered" {
				// Same samples, same counts: the order is the timestamps' business (training sorts).
				if err != nil {
					t.Fatalf("reordered blocks: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "missing or repeated") {
				t.Fatalf("got %v, want a corrupt-data error naming a missing or repeated block", err)
			}
		})
	}
}

// A trailer whose field count times 8 wraps in 32 bits (2^29 fields "in 0 bytes") is refused,
// not read past the end of its block.
func TestTraceTrailerSizeWraps(t *testing.T) {
	_, hdr, blocks, _ := multiBlockTrace(t)
	le := binary.LittleEndian
	for _, c := range []struct{ count, size uint32 }{{1 << 29, 0}, {1<<29 + 1, 8}, {1, 8}, {0, 0}} {
		tr := make([]byte, 16+c.size)
		le.PutUint32(tr[0:], trailerTag)
		le.PutUint32(tr[4:], c.count)
		le.PutUint32(tr[8:], c.size)
		data := resealTrace(joinParts(hdr, append(blocks, tr)...))
		_, _, err := readAll(data)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "trailer of") {
			t.Errorf("trailer of %d fields in %d bytes: got %v, want a corrupt trailer", c.count, c.size, err)
		}
	}
}

// Header fields the reader would otherwise take on trust: H (a model inherits it, and the
// scheduler's keep budget with it) and the reserved flags.
func TestTraceHeaderFieldsChecked(t *testing.T) {
	good, _ := writeTrace(t, 20, 3)
	le := binary.LittleEndian
	for name, f := range map[string]func(b []byte){
		"horizon 0":      func(b []byte) { le.PutUint64(b[16+8:], 0) },
		"horizon 2^63+5": func(b []byte) { le.PutUint64(b[16+8:], 1<<63+5) },
		"horizon 61 s":   func(b []byte) { le.PutUint64(b[16+8:], 61e9) },
		"reserved flags": func(b []byte) { le.PutUint16(b[10:], 1) },
	} {
		b := append([]byte(nil), good...)
		f(b)
		_, _, err := readAll(resealTrace(b))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	b := append([]byte(nil), good...)
	le.PutUint64(b[16+8:], MaxHorizonNs)
	if _, _, err := readAll(resealTrace(b)); err != nil {
		t.Errorf("horizon of 1 min: %v", err)
	}
}

// FuzzTraceReaderResealed is FuzzTraceReader past the checksums: every input is resealed
// before it is read, so the fuzzer's mutations reach the block, trailer and record checks
// (FuzzTraceReader's almost never get past a CRC). Whatever it accepts must be consistent:
// the samples read are the trailer's count.
func FuzzTraceReaderResealed(f *testing.F) {
	good, _ := writeTrace(f, 50, 4)
	f.Add(good)
	hdr, blocks, _ := traceParts(append([]byte(nil), good...))
	if len(blocks) > 0 {
		f.Add(joinParts(hdr, blocks[len(blocks)-1]))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		data = resealTrace(append([]byte(nil), data...))
		r, err := NewTraceReaderAnySchema(bytes.NewReader(data))
		if err != nil {
			return
		}
		var s Sample
		n := uint64(0)
		for i := 0; i < 1<<20; i++ {
			err := r.Next(&s)
			if err == io.EOF {
				if sum := r.Summary(); sum == nil || sum.Samples != n {
					t.Fatalf("clean end after %d samples, trailer %+v", n, sum)
				}
				return
			}
			if err != nil {
				var te *TraceError
				if !errors.As(err, &te) {
					t.Fatalf("error without offset: %v", err)
				}
				return
			}
			n++
		}
	})
}

// Durable names the last whole block within the bytes that reached the file, and a trace cut
// there and ended with Trailer reads back whole, with the loss in the trailer.
func TestTraceDurableCut(t *testing.T) {
	full, want := writeTrace(t, 6000, 12)
	hdr, blocks, _ := traceParts(full)
	var buf bytes.Buffer
	w, err := NewTraceWriter(&buf, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if err := w.Write(&want[i]); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	stream := buf.Bytes()
	// Say the file got the header, two whole blocks and half of the third.
	written := int64(len(hdr) + len(blocks[0]) + len(blocks[1]) + len(blocks[2])/2)
	off, n, pos, ok := w.Durable(written)
	if !ok || off != int64(len(hdr)+len(blocks[0])+len(blocks[1])) {
		t.Fatalf("Durable(%d) = %d, %v; want the end of the second block, %d", written, off, ok, len(hdr)+len(blocks[0])+len(blocks[1]))
	}
	total, _ := w.Samples()
	cut := append(bytes.Clone(stream[:off]), Trailer(TraceSummary{Samples: n, Positives: pos, WriteLost: total - n})...)
	got, r, err := readAll(cut)
	if err != nil {
		t.Fatalf("cut trace: %v", err)
	}
	if uint64(len(got)) != n || r.Summary().WriteLost != total-n || n == 0 || n >= total {
		t.Fatalf("read %d samples, trailer %+v; want %d of %d", len(got), r.Summary(), n, total)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("sample %d changed", i)
		}
	}
	if _, _, _, ok := w.Durable(10); ok {
		t.Error("Durable inside the header: ok")
	}
}
