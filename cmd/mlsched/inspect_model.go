package main

import (
	"io"
)

// inspectModel is replaced by the training work; until then non-traces are refused.
func inspectModel(path string, jsonOut bool, w io.Writer) error {
	return errorf(exitBadInput, "%s: not an mlsched trace", path)
}
