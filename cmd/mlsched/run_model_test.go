package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlsched/mlsched/model"
)

// nobody owns the files an attacker could write.
const nobody = 65534

func TestCheckModelTrusted(t *testing.T) {
	// The trusted user is root in production; as a plain user the test trusts itself, so the
	// mode cases still run (the ownership cases need chown: root only).
	me := uint32(os.Geteuid())
	asRoot := me == 0
	// t.TempDir's ancestors (/tmp: 1777 root) must themselves pass for any case to.
	base := t.TempDir()
	if err := checkDirChain(base, me); err != nil {
		t.Skipf("the temporary directory's ancestors are not trusted here: %v", err)
	}

	type tc struct {
		name    string
		root    bool // needs chown
		setup   func(t *testing.T, dir string) string
		refused string // "" = accepted, else a substring of the error
	}
	file := func(t *testing.T, dir, name string, perm os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("model"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil { // not subject to the umask
			t.Fatal(err)
		}
		return p
	}
	subdir := func(t *testing.T, dir string, perm os.FileMode) string {
		t.Helper()
		d := filepath.Join(dir, "d")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, perm); err != nil {
			t.Fatal(err)
		}
		return d
	}
	chown := func(t *testing.T, p string, uid, gid int) {
		t.Helper()
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	cases := []tc{
		{name: "0644", setup: func(t *testing.T, d string) string { return file(t, d, "m.bin", 0o644) }},
		{name: "0600", setup: func(t *testing.T, d string) string { return file(t, d, "m.bin", 0o600) }},
		{name: "0444 in 0755 dir", setup: func(t *testing.T, d string) string { return file(t, subdir(t, d, 0o755), "m.bin", 0o444) }},
		{name: "world-writable file", refused: "writable by every user", setup: func(t *testing.T, d string) string { return file(t, d, "m.bin", 0o646) }},
		{name: "group-writable file, group root", root: true, refused: "writable by group 0", setup: func(t *testing.T, d string) string {
			p := file(t, d, "m.bin", 0o664)
			chown(t, p, 0, 0)
			return p
		}},
		{name: "group-writable file, other group", root: true, refused: "writable by group 65534", setup: func(t *testing.T, d string) string {
			p := file(t, d, "m.bin", 0o664)
			chown(t, p, 0, nobody)
			return p
		}},
		{name: "file owned by a user", root: true, refused: "owned by uid 65534", setup: func(t *testing.T, d string) string {
			p := file(t, d, "m.bin", 0o644)
			chown(t, p, nobody, 0)
			return p
		}},
		{name: "world-writable dir", refused: "writable by every user without the sticky bit", setup: func(t *testing.T, d string) string {
			return file(t, subdir(t, d, 0o777), "m.bin", 0o644)
		}},
		{name: "world-writable dir with sticky bit", setup: func(t *testing.T, d string) string {
			return file(t, subdir(t, d, os.ModeSticky|0o777), "m.bin", 0o644)
		}},
		{name: "group-writable dir, other group", root: true, refused: "writable by group 65534 without the sticky bit", setup: func(t *testing.T, d string) string {
			sd := subdir(t, d, 0o775)
			chown(t, sd, 0, nobody)
			return file(t, sd, "m.bin", 0o644)
		}},
		{name: "dir owned by a user", root: true, refused: "directory " /* .../d */, setup: func(t *testing.T, d string) string {
			sd := subdir(t, d, 0o755)
			chown(t, sd, nobody, nobody)
			return file(t, sd, "m.bin", 0o644)
		}},
		{name: "safe link to a file in an unsafe dir", refused: "without the sticky bit", setup: func(t *testing.T, d string) string {
			target := file(t, subdir(t, d, 0o777), "m.bin", 0o644)
			link := filepath.Join(d, "link.bin")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{name: "link in an unsafe dir to a safe file", refused: "without the sticky bit", setup: func(t *testing.T, d string) string {
			target := file(t, d, "m.bin", 0o644)
			link := filepath.Join(subdir(t, d, 0o777), "link.bin")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{name: "missing file is left to the loader", setup: func(t *testing.T, d string) string { return filepath.Join(d, "absent.bin") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root && !asRoot {
				t.Skip("needs root (chown)")
			}
			dir := t.TempDir()
			p := c.setup(t, dir)
			err := checkModelTrusted(p, me)
			switch {
			case c.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.refused != "" && err == nil:
				t.Errorf("accepted, want refused (%s)", c.refused)
			case c.refused != "" && (!strings.Contains(err.Error(), c.refused) || !errors.Is(err, errModelWritable)):
				t.Errorf("error %q, want %q and errModelWritable", err, c.refused)
			}
		})
	}
}

// checkDirChain checks only the directories, by asking about a file that passes itself.
func checkDirChain(dir string, trusted uint32) error {
	p := filepath.Join(dir, ".probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(p)
	return checkModelTrusted(p, trusted)
}

// As root, `mlsched run --model FILE` exits 6 with the reason for a world-writable model,
// before it looks for sched_ext; a safe copy of the same model gets past the check.
func TestRunRefusesWritableModel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the check applies when mlsched runs as root")
	}
	dir := t.TempDir()
	if err := checkDirChain(dir, 0); err != nil {
		t.Skipf("the temporary directory's ancestors are not root's alone: %v", err)
	}
	m, err := model.Default()
	if err != nil {
		t.Skipf("no default model: %v", err)
	}
	bad := filepath.Join(dir, "bad.bin")
	if err := m.Save(bad); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bad, 0o666); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"run", "--model", bad, "--metrics-addr", ""}, &out, &errb)
	if code != exitBadInput || !strings.Contains(errb.String(), "a non-root user could change it") ||
		!strings.Contains(errb.String(), "steers the scheduler") {
		t.Errorf("world-writable model: exit %d, stderr %q; want %d and the reason", code, errb.String(), exitBadInput)
	}

	good := filepath.Join(dir, "good.bin")
	if err := m.Save(good); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	code = run([]string{"run", "--model", good, "--metrics-addr", ""}, &out, &errb)
	if code == exitBadInput {
		t.Errorf("a root-owned 0644 model was refused: %s", errb.String())
	}
}
