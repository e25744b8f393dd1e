package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format, the only one the kernel unpacks
// as an initramfs. The kernel also unpacks several archives concatenated in one initrd (each
// compressed on its own or not), which is how a scenario's script rides on the shared base.
type cpioWriter struct {
	w   *bufio.Writer
	n   int64 // bytes written, for padding
	ino uint32
	err error
}

func newCpioWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: bufio.NewWriter(w), ino: 1} }

const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
	cpioChar = 0o020000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	k, err := c.w.Write(b)
	c.n += int64(k)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// entry writes one header, the name and the data. Owner root, mtime 0: the archive's bytes
// depend only on its contents.
func (c *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	nlink := uint32(1)
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

// Dir, File and CharDev add entries; names are relative ("init", "dev/console").
func (c *cpioWriter) Dir(name string) { c.entry(name, cpioDir|0o755, 0, 0, nil) }
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.entry(name, cpioFile|perm, 0, 0, data)
}
func (c *cpioWriter) CharDev(name string, major, minor uint32) {
	c.entry(name, cpioChar|0o600, major, minor, nil)
}

// Close writes the trailer and flushes.
func (c *cpioWriter) Close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}

// writeTree writes files (name -> content, executable if perm says so) with their parent
// directories first, in a stable order.
func writeTree(c *cpioWriter, dirs []string, files map[string]cpioData) {
	seen := map[string]bool{".": true, "": true}
	var mkdir func(d string)
	mkdir = func(d string) {
		if seen[d] {
			return
		}
		mkdir(path.Dir(d))
		seen[d] = true
		c.Dir(d)
	}
	for _, d := range dirs {
		mkdir(strings.TrimPrefix(d, "/"))
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rel := strings.TrimPrefix(n, "/")
		mkdir(path.Dir(rel))
		c.File(rel, files[n].perm, files[n].data)
	}
}

type cpioData struct {
	perm uint32
	data []byte
}
