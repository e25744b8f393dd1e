// Command genschema writes bpf/schema_table.h from the Go feature schema.
package main

import (
	"log"
	"os"

	"github.com/mlsched/mlsched/features"
)

func main() {
	out := "schema_table.h"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	if err := os.WriteFile(out, []byte(features.CHeader()), 0o644); err != nil {
		log.Fatalf("genschema: %v", err)
	}
}
