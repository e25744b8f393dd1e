package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// errModelWritable: `mlsched run` as root refuses a model file that someone other than root
// could change. The model decides, for every wakeup on every CPU, whether a task stays or
// moves: whoever can rewrite the file steers the root scheduler (starve a task, pile work on
// one CPU). So the file and every directory above it must be root's alone, the way sshd's
// StrictModes and sudo treat their files.
var errModelWritable = errors.New("a non-root user could change it")

// checkModelTrusted returns an error wrapping errModelWritable if a user other than trusted
// (root, in production) could write the model file at path or replace it: the file is owned
// by another user or is group- or other-writable, or a directory on the way to it (symbolic
// links resolved, the directories holding the links too) is owned by another user or is
// group- or other-writable without the sticky bit. Group write is refused even for group 0:
// a non-root user can be a member of it. ACLs are not read. A path that does not resolve
// is left to the model loader, which gives the better error.
func checkModelTrusted(path string, trusted uint32) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil
	}
	refuse := func(what string, args ...any) error {
		return fmt.Errorf("model file %s: %s: %w; as root, mlsched runs only a model that root alone can change, because the model steers the scheduler of every task on the machine (fix: chown root:root the file, chmod 644 it, chmod go-w its directories, or copy it to /etc/mlsched/)",
			path, fmt.Sprintf(what, args...), errModelWritable)
	}

	fi, err := os.Stat(real)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	switch {
	case st.Uid != trusted:
		return refuse("%s is owned by uid %d", real, st.Uid)
	case fi.Mode().Perm()&0o002 != 0:
		return refuse("%s is writable by every user (mode %04o)", real, fi.Mode().Perm())
	case fi.Mode().Perm()&0o020 != 0:
		return refuse("%s is writable by group %d (mode %04o)", real, st.Gid, fi.Mode().Perm())
	}

	// The directories: those on the resolved path, and those the given path passes through
	// (a symbolic link in a user's directory can be pointed elsewhere by that user).
	seen := map[string]bool{}
	var dirs []string
	for _, p := range []string{abs, real} {
		for d := filepath.Dir(p); !seen[d]; d = filepath.Dir(d) {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil {
			return refuse("cannot check directory %s: %v", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		perm, sticky := fi.Mode().Perm(), fi.Mode()&os.ModeSticky != 0
		switch {
		case st.Uid != trusted:
			return refuse("directory %s is owned by uid %d (its owner can rename or replace the file)", d, st.Uid)
		case perm&0o002 != 0 && !sticky:
			return refuse("directory %s is writable by every user without the sticky bit (mode %04o: anyone can replace the file)", d, perm)
		case perm&0o020 != 0 && !sticky:
			return refuse("directory %s is writable by group %d without the sticky bit (mode %04o: the group can replace the file)", d, st.Gid, perm)
		}
	}
	return nil
}
