//go:build certmanager_v1_19

package main

import (
	"github.com/spf13/pflag"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
)

// addBackoffFlags: cert-manager 1.19's controller has a fixed issuance
// backoff (1 h, doubling to 32 h) and no flags for it.
func addBackoffFlags(*pflag.FlagSet, *controllerpkg.ContextOptions) {}
