//go:build !certmanager_v1_19

package main

import (
	"time"

	"github.com/spf13/pflag"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
)

// addBackoffFlags registers the issuance backoff flags (cert-manager >= 1.20;
// go.v1.19.5.mod builds with the tag certmanager_v1_19 and backoff_v1_19.go).
func addBackoffFlags(fs *pflag.FlagSet, o *controllerpkg.ContextOptions) {
	fs.DurationVar(&o.CertificateRequestMinimumBackoffDuration, "certificate-request-minimum-backoff-duration", time.Hour, "First backoff after a failed issuance.")
	fs.DurationVar(&o.CertificateRequestMaximumBackoffDuration, "certificate-request-maximum-backoff-duration", 32*time.Hour, "Largest backoff after repeated failed issuances.")
}
