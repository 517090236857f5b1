// Command cert-manager-cainjector copies CA bundles into webhook
// configurations, CRD conversion settings and APIServices that ask for them
// (the cert-manager.io/inject-ca-from* annotations), at the version pinned in
// ../go.mod; it is what makes the API server trust cert-manager's own webhook.
//
// The reconcilers are upstream code (pkg/controller/cainjector); the
// configuration types, defaults, --config file format and validation are
// cert-manager's own (internal/apis/config/cainjector, pkg/cainjector/configfile).
// This main declares upstream's flag names (so cert-manager's Helm chart drives
// it unchanged) and starts a controller-runtime manager with leader election.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cert-manager/cert-manager/akv-devcluster-components/configload"
	config "github.com/cert-manager/cert-manager/internal/apis/config/cainjector"
	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/cainjector/scheme"
	"github.com/cert-manager/cert-manager/internal/apis/config/cainjector/validation"
	_ "github.com/cert-manager/cert-manager/internal/cainjector/feature" // registers the cainjector's feature gates
	"github.com/cert-manager/cert-manager/internal/kube"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/cainjector/v1alpha1"
	"github.com/cert-manager/cert-manager/pkg/cainjector/configfile"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
)

func defaults() (*config.CAInjectorConfiguration, error) {
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return nil, err
	}
	versioned := &configv1alpha1.CAInjectorConfiguration{}
	scheme.Default(versioned)
	cfg := &config.CAInjectorConfiguration{}
	if err := scheme.Convert(versioned, cfg, nil); err != nil {
		return nil, err
	}
	return cfg, nil
}

func flagSet(c *config.CAInjectorConfiguration, configPath *string, showVersion *bool) *pflag.FlagSet {
	fs := pflag.NewFlagSet("cert-manager-cainjector", pflag.ContinueOnError)
	fs.StringVar(configPath, "config", *configPath, "Path to a CAInjectorConfiguration file; flags given on the command line override it.")
	fs.BoolVar(showVersion, "version", false, "Print the cert-manager version and exit.")
	fs.StringVar(&c.KubeConfig, "kubeconfig", c.KubeConfig, "Path to a kubeconfig; empty means in-cluster configuration.")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "Only inject into resources in this namespace (empty: all).")
	fs.StringSliceVar(&c.IgnoreNamespaces, "ignore-namespaces", c.IgnoreNamespaces, "Namespaces whose resources are never injected.")
	le := &c.LeaderElectionConfig
	fs.BoolVar(&le.Enabled, "leader-elect", le.Enabled, "Run only while holding the leader Lease.")
	fs.StringVar(&le.Namespace, "leader-election-namespace", le.Namespace, "Namespace of the leader Lease.")
	fs.DurationVar(&le.LeaseDuration, "leader-election-lease-duration", le.LeaseDuration, "How long a non-leader waits before taking over an unrenewed Lease.")
	fs.DurationVar(&le.RenewDeadline, "leader-election-renew-deadline", le.RenewDeadline, "How long the leader keeps retrying to renew before giving up.")
	fs.DurationVar(&le.RetryPeriod, "leader-election-retry-period", le.RetryPeriod, "Wait between leader election attempts.")
	fs.BoolVar(&c.EnableDataSourceConfig.Certificates, "enable-certificates-data-source", c.EnableDataSourceConfig.Certificates, "Inject from Certificates (cert-manager.io/inject-ca-from).")
	inj := &c.EnableInjectableConfig
	fs.BoolVar(&inj.MutatingWebhookConfigurations, "enable-mutatingwebhookconfigurations-injectable", inj.MutatingWebhookConfigurations, "Inject into MutatingWebhookConfigurations.")
	fs.BoolVar(&inj.ValidatingWebhookConfigurations, "enable-validatingwebhookconfigurations-injectable", inj.ValidatingWebhookConfigurations, "Inject into ValidatingWebhookConfigurations.")
	fs.BoolVar(&inj.CustomResourceDefinitions, "enable-customresourcedefinitions-injectable", inj.CustomResourceDefinitions, "Inject into CustomResourceDefinitions.")
	fs.BoolVar(&inj.APIServices, "enable-apiservices-injectable", inj.APIServices, "Inject into APIServices.")
	fs.BoolVar(&c.EnablePprof, "enable-profiling", c.EnablePprof, "Serve pprof.")
	fs.StringVar(&c.PprofAddress, "profiler-address", c.PprofAddress, "pprof address.")
	fs.StringVar(&c.MetricsListenAddress, "metrics-listen-address", c.MetricsListenAddress, "Prometheus metrics address ('0' disables it).")
	fs.Var(cliflag.NewMapStringBool(&c.FeatureGates), "feature-gates", "cainjector feature gates.")
	logf.AddFlags(&c.Logging, fs)
	return fs
}

func run(ctx context.Context, cfg *config.CAInjectorConfiguration) error {
	restConfig, err := kube.BuildClientConfig("", cfg.KubeConfig)
	if err != nil {
		return err
	}
	restConfig = util.RestConfigWithUserAgent(restConfig, "cainjector")
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiext.AddToScheme, apireg.AddToScheme, cmapi.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	metricsAddress := cfg.MetricsListenAddress
	le := cfg.LeaderElectionConfig
	pprof := ""
	if cfg.EnablePprof {
		pprof = cfg.PprofAddress
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddress},
		HealthProbeBindAddress:        "0",
		PprofBindAddress:              pprof,
		LeaderElection:                le.Enabled,
		LeaderElectionNamespace:       le.Namespace,
		LeaderElectionID:              "cert-manager-cainjector-leader-election",
		LeaderElectionReleaseOnCancel: true,
		LeaderElectionResourceLock:    "leases",
		LeaseDuration:                 &le.LeaseDuration,
		RenewDeadline:                 &le.RenewDeadline,
		RetryPeriod:                   &le.RetryPeriod,
	})
	if err != nil {
		return fmt.Errorf("creating the controller manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	inj := cfg.EnableInjectableConfig
	if err := cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		Namespace:                    cfg.Namespace,
		IgnoreNamespaces:             cfg.IgnoreNamespaces,
		EnableCertificatesDataSource: cfg.EnableDataSourceConfig.Certificates,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   inj.MutatingWebhookConfigurations,
			cainjector.ValidatingWebhookConfigurationName: inj.ValidatingWebhookConfigurations,
			cainjector.APIServiceName:                     inj.APIServices,
			cainjector.CustomResourceDefinitionName:       inj.CustomResourceDefinitions,
		},
	}); err != nil {
		return fmt.Errorf("registering the injectors: %w", err)
	}
	return mgr.Start(ctx)
}

func main() {
	cfg := configload.Start(os.Args[1:], configload.Component[config.CAInjectorConfiguration]{
		Defaults: defaults,
		Flags:    flagSet,
		Decode: func(data []byte) (*config.CAInjectorConfiguration, []*string, error) {
			file := configfile.New()
			if err := file.DecodeAndConfigure(data); err != nil {
				return nil, nil, err
			}
			refs, err := file.GetPathRefs()
			return file.Config, refs, err
		},
		Validate: func(c *config.CAInjectorConfiguration) field.ErrorList {
			return validation.ValidateCAInjectorConfiguration(c, nil)
		},
		FeatureGates: func(c *config.CAInjectorConfiguration) map[string]bool { return c.FeatureGates },
		Logging:      func(c *config.CAInjectorConfiguration) *logsapi.LoggingConfiguration { return &c.Logging },
	})
	defer logf.FlushLogs()
	log := klog.Background().WithName("cert-manager").WithName("cainjector")
	ctrl.SetLogger(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, log)
	log.Info("starting cert-manager cainjector", "version", util.AppVersion)
	if err := run(ctx, cfg); err != nil {
		log.Error(err, "exiting")
		logf.FlushLogs()
		os.Exit(1)
	}
}
