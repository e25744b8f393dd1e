package model

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"slices"

	"github.com/mlsched/mlsched/features"
	"github.com/mlsched/mlsched/features/outfile"
)

// Magic opens every model file.
const Magic = "MLSMODEL"

// Version is the format version this package reads and writes: version 3 is feature schema v2
// (the 64 syscall counts and R's scheduling state, features.NumInputs inputs) with the
// abstention margin after the notes (0: none). Versions 1 and 2 (schema v1, 64 inputs; 2 added
// the margin) are refused with a message that says to retrain (docs/MODEL_FORMAT.md).
const Version uint32 = 3

// VersionSchemaV1 is the last version of schema v1 models.
const VersionSchemaV1 uint32 = 2

// headerSize is the size of the fixed header (magic .. horizon), see docs/MODEL_FORMAT.md.
const headerSize = 48

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes a valid model; it refuses an invalid one with Validate's error.
// The encoding is canonical: Unmarshal then MarshalBinary gives the same bytes.
func (m *Model) MarshalBinary() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("marshal model: %w", err)
	}
	return m.encode(), nil
}

// encode writes the model without validating it (tests use it to build bad files).
func (m *Model) encode() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, headerSize+4*(2*m.Inputs+len(m.W1)+2*m.Hidden+1)+256)
	b = append(b, Magic...)
	b = le.AppendUint32(b, Version)
	b = le.AppendUint32(b, m.NormKind)
	b = le.AppendUint64(b, m.SchemaID)
	b = le.AppendUint32(b, uint32(m.Inputs))
	b = le.AppendUint32(b, uint32(m.Hidden))
	b = le.AppendUint32(b, NumOutputs)
	b = le.AppendUint32(b, math.Float32bits(m.Threshold))
	b = le.AppendUint64(b, m.HorizonNs)
	for _, xs := range [][]float32{m.Mean, m.Std, m.W1, m.B1, m.W2, {m.B2}} {
		for _, x := range xs {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
	}
	md := &m.Meta
	b = le.AppendUint64(b, uint64(md.CreatedUnixNs))
	for _, x := range []float64{md.Metrics.Accuracy, md.Metrics.BalancedAccuracy,
		md.Metrics.Precision, md.Metrics.Recall, md.Metrics.AUC} {
		b = le.AppendUint64(b, math.Float64bits(x))
	}
	b = le.AppendUint32(b, uint32(len(md.Metrics.Baselines)))
	for _, bl := range md.Metrics.Baselines {
		b = appendString(b, bl.Name)
		b = le.AppendUint64(b, math.Float64bits(bl.Accuracy))
	}
	b = le.AppendUint64(b, md.Data.Samples)
	b = le.AppendUint64(b, md.Data.Positives)
	b = le.AppendUint32(b, uint32(len(md.Data.Traces)))
	for _, t := range md.Data.Traces {
		b = appendString(b, t)
	}
	keys := make([]string, 0, len(md.Notes))
	for k := range md.Notes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = le.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, md.Notes[k])
	}
	b = le.AppendUint32(b, math.Float32bits(m.AbstainMargin))
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// decoder reads the file front to back. Every read checks the remaining length first, so a
// truncated or hostile file yields ErrTruncated, never a panic or a large allocation.
type decoder struct {
	data []byte
	off  int
	err  error
}

func (d *decoder) need(field string, n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || n > len(d.data)-d.off {
		d.err = fmt.Errorf("read %s at offset %d: need %d bytes, have %d: %w",
			field, d.off, n, len(d.data)-d.off, ErrTruncated)
		return false
	}
	return true
}

func (d *decoder) u32(field string) uint32 {
	if !d.need(field, 4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(d.data[d.off:])
	d.off += 4
	return v
}

func (d *decoder) u64(field string) uint64 {
	if !d.need(field, 8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(d.data[d.off:])
	d.off += 8
	return v
}

func (d *decoder) f64(field string) float64 { return math.Float64frombits(d.u64(field)) }

func (d *decoder) f32s(field string, n int) []float32 {
	if !d.need(field, 4*n) {
		return nil
	}
	xs := make([]float32, n)
	for i := range xs {
		xs[i] = math.Float32frombits(binary.LittleEndian.Uint32(d.data[d.off:]))
		d.off += 4
	}
	return xs
}

// count reads a list length, bounded by MaxListLen and by what the rest of the file could
// hold at minEach bytes per entry.
func (d *decoder) count(field string, minEach int) int {
	at := d.off
	n := d.u32(field)
	if d.err != nil {
		return 0
	}
	if n > MaxListLen {
		d.err = fmt.Errorf("%s at offset %d: %d entries, max %d: %w", field, at, n, MaxListLen, ErrMeta)
		return 0
	}
	if !d.need(field, int(n)*minEach) {
		return 0
	}
	return int(n)
}

func (d *decoder) str(field string) string {
	at := d.off
	n := d.u32(field)
	if d.err != nil {
		return ""
	}
	if n > MaxStringLen {
		d.err = fmt.Errorf("%s at offset %d: %d bytes, max %d: %w", field, at, n, MaxStringLen, ErrMeta)
		return ""
	}
	if !d.need(field, int(n)) {
		return ""
	}
	s := string(d.data[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

// Unmarshal decodes and validates a model file. Checks run in this order, and the first
// failure is returned: magic, version, structure (dimensions, lengths, truncation, trailing
// data), checksum, then every field's value (schema id, normalisation, finiteness, ranges,
// threshold, horizon, metadata), as in Validate.
func Unmarshal(data []byte) (*Model, error) {
	m, err := unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("unmarshal model: %w", err)
	}
	return m, nil
}

func unmarshal(data []byte) (*Model, error) {
	n := min(len(data), len(Magic))
	if string(data[:n]) != Magic[:n] {
		return nil, fmt.Errorf("magic %q at offset 0, want %q: %w", data[:n], Magic, ErrBadMagic)
	}
	d := &decoder{data: data, off: n}
	if n < len(Magic) {
		d.need("magic", len(Magic)-n)
		return nil, d.err
	}
	version := d.u32("version")
	if d.err == nil && version >= 1 && version <= VersionSchemaV1 {
		return nil, fmt.Errorf("version %d at offset 8 is feature schema v1 (the %d syscall counts only); this mlsched reads version %d, "+
			"schema v2 (the counts and R's scheduling state): retrain the model with `mlsched train` on traces captured by this mlsched: %w",
			version, features.NumBuckets, Version, ErrVersion)
	}
	if d.err == nil && version != Version {
		return nil, fmt.Errorf("version %d at offset 8, this binary reads %d (the model was written by a newer mlsched: "+
			"run it with that mlsched, or retrain with this one): %w", version, Version, ErrVersion)
	}
	m := &Model{}
	m.NormKind = d.u32("normalisation kind")
	m.SchemaID = d.u64("schema id")
	inputs := d.u32("inputs")
	hidden := d.u32("hidden")
	outputs := d.u32("outputs")
	thr := d.u32("threshold")
	m.HorizonNs = d.u64("horizon")
	if d.err != nil {
		return nil, d.err
	}
	switch {
	case inputs != NumInputs:
		return nil, fmt.Errorf("inputs %d at offset 24, want %d: %w", inputs, NumInputs, ErrDims)
	case hidden < 1 || hidden > MaxHidden:
		return nil, fmt.Errorf("hidden %d at offset 28, want 1..%d: %w", hidden, MaxHidden, ErrDims)
	case outputs != NumOutputs:
		return nil, fmt.Errorf("outputs %d at offset 32, want %d: %w", outputs, NumOutputs, ErrDims)
	}
	m.Inputs, m.Hidden = int(inputs), int(hidden)
	m.Threshold = math.Float32frombits(thr)

	// Bound the whole parameter block before allocating any of it.
	if !d.need("parameters", 4*(2*m.Inputs+m.Hidden*m.Inputs+2*m.Hidden+1)) {
		return nil, d.err
	}
	m.Mean = d.f32s("mean", m.Inputs)
	m.Std = d.f32s("std", m.Inputs)
	m.W1 = d.f32s("w1", m.Hidden*m.Inputs)
	m.B1 = d.f32s("b1", m.Hidden)
	m.W2 = d.f32s("w2", m.Hidden)
	m.B2 = math.Float32frombits(d.u32("b2"))

	md := &m.Meta
	md.CreatedUnixNs = int64(d.u64("created"))
	md.Metrics.Accuracy = d.f64("accuracy")
	md.Metrics.BalancedAccuracy = d.f64("balanced_accuracy")
	md.Metrics.Precision = d.f64("precision")
	md.Metrics.Recall = d.f64("recall")
	md.Metrics.AUC = d.f64("auc")
	if nb := d.count("baselines", 4+8); nb > 0 {
		md.Metrics.Baselines = make([]Baseline, nb)
		for i := range md.Metrics.Baselines {
			md.Metrics.Baselines[i].Name = d.str("baseline name")
			md.Metrics.Baselines[i].Accuracy = d.f64("baseline accuracy")
		}
	}
	md.Data.Samples = d.u64("samples")
	md.Data.Positives = d.u64("positives")
	if nt := d.count("traces", 4); nt > 0 {
		md.Data.Traces = make([]string, nt)
		for i := range md.Data.Traces {
			md.Data.Traces[i] = d.str("trace name")
		}
	}
	if nn := d.count("notes", 4+4); nn > 0 {
		md.Notes = make(map[string]string, nn)
		prev := ""
		for i := 0; i < nn && d.err == nil; i++ {
			at := d.off
			k := d.str("note key")
			v := d.str("note value")
			if d.err == nil && i > 0 && k <= prev {
				// Sorted, unique keys keep the encoding canonical.
				d.err = fmt.Errorf("note key %q at offset %d not after %q: %w", k, at, prev, ErrMeta)
			}
			md.Notes[k] = v
			prev = k
		}
	}
	m.AbstainMargin = math.Float32frombits(d.u32("abstain margin"))
	if d.err != nil {
		return nil, d.err
	}
	body := d.off
	sum := d.u32("checksum")
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(data) {
		return nil, fmt.Errorf("%d bytes at offset %d: %w", len(data)-d.off, d.off, ErrTrailingData)
	}
	if got := crc32.Checksum(data[:body], castagnoli); got != sum {
		return nil, fmt.Errorf("crc32c %08x at offset %d, content has %08x: %w", sum, body, got, ErrChecksum)
	}
	if m.SchemaID != features.SchemaID() {
		return nil, fmt.Errorf("schema id %s at offset 16, this binary has %s (the model was trained on another feature schema: "+
			"retrain it with `mlsched train` on traces captured by this mlsched, or run it with the mlsched that trained it): %w",
			features.FormatSchemaID(m.SchemaID), features.FormatSchemaID(features.SchemaID()), ErrSchemaMismatch)
	}
	if err := m.validateValues(true); err != nil {
		return nil, err
	}
	return m, nil
}

// maxFileSize bounds Load: the largest valid model is about 0.3 MB of parameters plus
// at most ~16 MB of metadata strings.
const maxFileSize = 64 << 20

// Load reads and validates a model file.
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("load model %s: %d bytes, max %d: %w", path, st.Size(), maxFileSize, ErrTrailingData)
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	m, err := unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return m, nil
}

// Save writes the model to path atomically (features/outfile): to a new file under a random
// name in the same directory, synced, then renamed over path. A reader sees the old file or
// the new one, never a mix, and no link planted at either name is followed.
func (m *Model) Save(path string) error {
	data, err := m.MarshalBinary()
	if err != nil {
		return fmt.Errorf("save model %s: %w", path, err)
	}
	if err := outfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	return nil
}
