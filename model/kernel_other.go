//go:build !amd64

package model

import "github.com/mlsched/mlsched/features"

var useAVX512, useVBMI2 = false, false

func logit16AVX512(in *[features.NumBuckets]uint32, k *kernel16) float32 { panic("unreachable") }

func prob16AVX512(in *[features.NumBuckets]uint32, k *kernel16) float32 { panic("unreachable") }

func logit16VBMI2(in *[features.NumBuckets]uint32, k *kernel16) float32 { panic("unreachable") }

func prob16VBMI2(in *[features.NumBuckets]uint32, k *kernel16) float32 { panic("unreachable") }
