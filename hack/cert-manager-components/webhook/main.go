// Command cert-manager-webhook serves cert-manager's admission webhook
// (validation, defaulting and conversion of cert-manager resources, and the
// CertificateRequest identity/approval checks) at the version pinned in
// ../go.mod.
//
// Everything it serves is upstream code: the server and admission chain come
// from cert-manager's internal/webhook, the flags and their defaults from
// pkg/webhook/options, the --config file format from pkg/webhook/configfile.
// This main only parses flags (the same flag names as upstream's webhook, so
// cert-manager's Helm chart drives it unchanged), applies logging and feature
// gates, validates the configuration and runs the server until SIGTERM.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/akv-devcluster-components/configload"
	config "github.com/cert-manager/cert-manager/internal/apis/config/webhook"
	"github.com/cert-manager/cert-manager/internal/apis/config/webhook/validation"
	cmwebhook "github.com/cert-manager/cert-manager/internal/webhook"
	_ "github.com/cert-manager/cert-manager/internal/webhook/feature" // registers the webhook's feature gates
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	"github.com/cert-manager/cert-manager/pkg/webhook/configfile"
	"github.com/cert-manager/cert-manager/pkg/webhook/options"
)

func flagSet(cfg *config.WebhookConfiguration, configPath *string, showVersion *bool) *pflag.FlagSet {
	fs := pflag.NewFlagSet("cert-manager-webhook", pflag.ContinueOnError)
	fs.StringVar(configPath, "config", *configPath, "Path to a WebhookConfiguration file; flags given on the command line override it.")
	fs.BoolVar(showVersion, "version", false, "Print the cert-manager version and exit.")
	options.AddConfigFlags(fs, cfg)
	return fs
}

func main() {
	cfg := configload.Start(os.Args[1:], configload.Component[config.WebhookConfiguration]{
		Defaults: options.NewWebhookConfiguration,
		Flags:    flagSet,
		Decode: func(data []byte) (*config.WebhookConfiguration, []*string, error) {
			file := configfile.New()
			if err := file.DecodeAndConfigure(data); err != nil {
				return nil, nil, err
			}
			refs, err := file.GetPathRefs()
			return file.Config, refs, err
		},
		Validate: func(c *config.WebhookConfiguration) field.ErrorList {
			return validation.ValidateWebhookConfiguration(c, nil)
		},
		FeatureGates: func(c *config.WebhookConfiguration) map[string]bool { return c.FeatureGates },
		Logging:      func(c *config.WebhookConfiguration) *logsapi.LoggingConfiguration { return &c.Logging },
	})
	defer logf.FlushLogs()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := klog.Background().WithName("cert-manager").WithName("webhook")
	ctx = logf.NewContext(ctx, log)
	log.Info("starting cert-manager webhook", "version", util.AppVersion)
	srv, err := cmwebhook.NewCertManagerWebhookServer(log, *cfg)
	if err == nil {
		err = srv.Run(ctx)
	}
	if err != nil {
		log.Error(err, "exiting")
		logf.FlushLogs()
		os.Exit(1)
	}
}
