package main

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/mlsched/mlsched/features"
)

// version is set at link time by `make build` (-X main.version=...).
var version = "dev"

// commitID is set at link time by `make build`; builds without VCS stamping fall back to it.
var commitID = ""

func init() {
	register(&command{
		name:    "version",
		summary: "print the version, the commit and the feature schema id",
		usage:   "",
		help:    "Prints mlsched's version, the git commit it was built from, the Go version, and the id of\nthe feature schema that its traces and models must match.",
		flags: func(fs *flag.FlagSet) func([]string) error {
			return func([]string) error {
				fmt.Fprintf(stdout, "mlsched %s\ncommit %s\nschema %s\ngo %s %s/%s\n",
					version, commit(), features.FormatSchemaID(features.SchemaID()),
					runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return nil
			}
		},
	})
}

func commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", ""
	if commitID != "" {
		rev = commitID
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	return rev + dirty
}
