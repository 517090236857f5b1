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
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/akv-devcluster-components/configload"
	config "github.com/cert-manager/cert-manager/internal/apis/config/webhook"
	"github.com/cert-manager/cert-manager/internal/apis/config/webhook/validation"
	cmwebhook "github.com/cert-manager/cert-manager/internal/webhook"
	_ "github.com/cert-manager/cert-manager/internal/webhook/feature" // registers the webhook's feature gates
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"
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

// load returns the configuration: upstream's defaults, then the --config
// file if any, then the command-line flags over both (see ../configload).
func load(args []string) (*config.WebhookConfiguration, bool, error) {
	return configload.Load(args, options.NewWebhookConfiguration, flagSet, func(data []byte) (*config.WebhookConfiguration, []*string, error) {
		file := configfile.New()
		if err := file.DecodeAndConfigure(data); err != nil {
			return nil, nil, err
		}
		refs, err := file.GetPathRefs()
		return file.Config, refs, err
	})
}

func main() {
	cfg, showVersion, err := load(os.Args[1:])
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(2)
	}
	if showVersion {
		fmt.Println(util.AppVersion)
		return
	}
	if errs := validation.ValidateWebhookConfiguration(cfg, nil); len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "error: invalid configuration: %v\n", errs.ToAggregate())
		os.Exit(2)
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		fmt.Fprintf(os.Stderr, "error: --feature-gates: %v\n", err)
		os.Exit(2)
	}
	logf.InitLogs()
	if err := logf.ValidateAndApply(&cfg.Logging); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(2)
	}
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
