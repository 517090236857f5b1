// Command cert-manager-controller runs cert-manager's own controllers (the
// packages under github.com/cert-manager/cert-manager/pkg/controller, at the
// version pinned in go.mod) against a Kubernetes API server.
//
// Why a main of our own: upstream's controller binary lives in the nested
// module github.com/cert-manager/cert-manager/controller-binary, which the Go
// module proxy does not serve (its .mod/.zip answer "not available"/403), so
// it cannot be required from here. This file only parses flags and starts the
// controllers that cert-manager's packages register themselves (controller
// logic, issuers, approver, informers and metrics are all upstream code). It
// accepts the flags cert-manager's Helm chart passes by default (so the chart
// runs it in a Pod unchanged) and elects a leader on the chart's Lease
// (kube-system/cert-manager-controller) with client-go's leaderelection; it has
// no config file and no DNS01 options: it is a development/test runner. The controller set and defaults follow upstream v1.21's
// DefaultEnabledControllers and flag defaults, except the Venafi issuer: its
// dependency github.com/Venafi/vcert/v5 is refused by the module proxy (403),
// so Venafi Issuers are not supported by this build. --feature-gates sets
// cert-manager's own gates (pkg/util/feature); with
// ExperimentalCertificateSigningRequestControllers=true `*` also runs the
// Kubernetes CSR signers, as upstream does.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/healthz"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	// Controllers register themselves with pkg/controller in init().
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/acme"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/vault"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	// Kubernetes CSR signers (upstream's ExperimentalCertificateSigningRequestControllers,
	// Venafi's aside), enabled by that feature gate as upstream does.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificatesigningrequests/acme"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificatesigningrequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificatesigningrequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificatesigningrequests/vault"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// Issuer implementations register themselves with pkg/issuer in init().
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/vault"
)

type leaderElectionOptions struct {
	namespace     string
	leaseDuration time.Duration
	renewDeadline time.Duration
	retryPeriod   time.Duration
}

type options struct {
	controllerpkg.ContextOptions
	controllers     []string
	workers         int
	leaderElect     bool
	leaderElection  leaderElectionOptions
	metricsAddress  string
	healthzAddress  string
	logging         *logsapi.LoggingConfiguration
	showVersion     bool
	featureGates    map[string]bool
	shutdownTimeout time.Duration
}

func newFlags(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("cert-manager-controller", pflag.ContinueOnError)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty means in-cluster configuration.")
	fs.StringVar(&o.APIServerHost, "master", "", "Address of the Kubernetes API server (overrides the kubeconfig).")
	fs.Float32Var(&o.KubernetesAPIQPS, "kube-api-qps", 20, "Client-side QPS towards the API server (when API priority and fairness is off).")
	fs.IntVar(&o.KubernetesAPIBurst, "kube-api-burst", 50, "Client-side burst towards the API server.")
	fs.StringVar(&o.Namespace, "namespace", "", "Only watch this namespace (empty: all namespaces).")
	fs.StringVar(&o.ClusterResourceNamespace, "cluster-resource-namespace", "kube-system", "Namespace holding the Secrets that ClusterIssuers reference.")
	fs.BoolVar(&o.ClusterIssuerAmbientCredentials, "cluster-issuer-ambient-credentials", true, "Let ClusterIssuers use ambient credentials.")
	fs.BoolVar(&o.IssuerAmbientCredentials, "issuer-ambient-credentials", false, "Let Issuers use ambient credentials.")
	fs.BoolVar(&o.EnableOwnerRef, "enable-certificate-owner-ref", false, "Make each Certificate the owner of its Secret.")
	fs.StringSliceVar(&o.CopiedAnnotationPrefixes, "copied-annotation-prefixes", []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"}, "Annotation prefixes copied from a Certificate to its CertificateRequests.")
	addBackoffFlags(fs, &o.ContextOptions)
	fs.StringVar(&o.DefaultIssuerKind, "default-issuer-kind", "Issuer", "ingress-shim default issuer kind.")
	fs.StringVar(&o.DefaultIssuerGroup, "default-issuer-group", "cert-manager.io", "ingress-shim default issuer group.")
	fs.StringSliceVar(&o.DefaultAutoCertificateAnnotations, "auto-certificate-annotations", []string{"kubernetes.io/tls-acme"}, "ingress-shim annotations.")
	fs.IntVar(&o.MaxConcurrentChallenges, "max-concurrent-challenges", 60, "ACME challenges processed at once.")
	fs.StringSliceVar(&o.controllers, "controllers", []string{"*"}, "Controllers to run: '*' is the default set, 'name' adds one, '-name' removes one.")
	fs.IntVar(&o.workers, "concurrent-workers", 5, "Workers per controller.")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "Run the controllers only while holding the leader Lease.")
	fs.StringVar(&o.leaderElection.namespace, "leader-election-namespace", "kube-system", "Namespace of the leader Lease (cert-manager-controller).")
	fs.DurationVar(&o.leaderElection.leaseDuration, "leader-election-lease-duration", 60*time.Second, "How long a non-leader waits before taking over an unrenewed Lease.")
	fs.DurationVar(&o.leaderElection.renewDeadline, "leader-election-renew-deadline", 40*time.Second, "How long the leader keeps retrying to renew before giving up.")
	fs.DurationVar(&o.leaderElection.retryPeriod, "leader-election-retry-period", 15*time.Second, "Wait between leader election attempts.")
	fs.StringVar(&o.ACMEOptions.HTTP01SolverImage, "acme-http01-solver-image", "quay.io/jetstack/cert-manager-acmesolver:"+util.AppVersion, "Image of ACME HTTP01 solver Pods.")
	fs.StringVar(&o.metricsAddress, "metrics-listen-address", "0.0.0.0:9402", "Prometheus metrics address (empty: off).")
	fs.StringVar(&o.healthzAddress, "healthz-listen-address", "0.0.0.0:9403", "Liveness (/livez) address (empty: off).")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "How long to wait for controllers to stop on SIGTERM.")
	fs.Var(cliflag.NewMapStringBool(&o.featureGates), "feature-gates", "cert-manager feature gates, e.g. ServerSideApply=true.")
	fs.BoolVar(&o.showVersion, "version", false, "Print the cert-manager version and exit.")
	logf.AddFlags(o.logging, fs)
	return fs
}

// defaultControllers mirrors upstream's DefaultEnabledControllers (v1.21).
var defaultControllers = []string{
	"issuers", "clusterissuers", "certificates-metrics", "ingress-shim",
	"orders", "challenges",
	"certificaterequests-issuer-acme", "certificaterequests-approver",
	"certificaterequests-issuer-ca", "certificaterequests-issuer-selfsigned",
	"certificaterequests-issuer-vault",
	"certificates-trigger", "certificates-issuing", "certificates-key-manager",
	"certificates-request-manager", "certificates-readiness",
	"certificates-revision-manager",
}

// experimentalCSRControllers mirrors upstream's
// ExperimentalCertificateSigningRequestControllers (v1.21) without Venafi's;
// like upstream, `*` includes them when the feature gate of that name is on.
var experimentalCSRControllers = []string{
	"certificatesigningrequests-issuer-acme", "certificatesigningrequests-issuer-ca",
	"certificatesigningrequests-issuer-selfsigned", "certificatesigningrequests-issuer-vault",
}

const csrControllersGate = featuregate.Feature("ExperimentalCertificateSigningRequestControllers")

func enabledControllers(spec []string) ([]string, error) {
	known := controllerpkg.Known()
	enabled := map[string]bool{}
	for _, raw := range spec {
		item := strings.TrimSpace(raw)
		switch {
		case item == "":
		case item == "*":
			for _, n := range defaultControllers {
				enabled[n] = true
			}
			if utilfeature.DefaultFeatureGate.Enabled(csrControllersGate) {
				for _, n := range experimentalCSRControllers {
					enabled[n] = true
				}
			}
		case strings.HasPrefix(item, "-"):
			name := item[1:]
			if _, ok := known[name]; !ok {
				return nil, fmt.Errorf("--controllers: unknown controller %q", name)
			}
			delete(enabled, name)
		default:
			if _, ok := known[item]; !ok {
				return nil, fmt.Errorf("--controllers: unknown controller %q", item)
			}
			enabled[item] = true
		}
	}
	names := make([]string, 0, len(enabled))
	for n := range enabled {
		if _, ok := known[n]; !ok {
			return nil, fmt.Errorf("controller %q is in the default set but not linked in", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, errors.New("--controllers selects no controller")
	}
	return names, nil
}

func listen(address, what string) (net.Listener, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("%s listener on %s: %w", what, address, err)
	}
	return ln, nil
}

func run(ctx context.Context, o *options) error {
	log := logf.FromContext(ctx, "controller")
	names, err := enabledControllers(o.controllers)
	if err != nil {
		return err
	}

	factory, err := controllerpkg.NewContextFactory(ctx, o.ContextOptions)
	if err != nil {
		return err
	}
	base, err := factory.Build()
	if err != nil {
		return err
	}

	var servers sync.WaitGroup
	if o.metricsAddress != "" {
		ln, err := listen(o.metricsAddress, "metrics")
		if err != nil {
			return err
		}
		server := base.Metrics.NewServer(ln)
		servers.Go(func() {
			if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "metrics server stopped")
			}
		})
		servers.Go(func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = server.Shutdown(shutdown) //nolint:contextcheck
		})
		log.Info("serving metrics", "address", ln.Addr().String())
	}
	if o.healthzAddress != "" {
		ln, err := listen(o.healthzAddress, "healthz")
		if err != nil {
			return err
		}
		health := healthz.NewServer(20 * time.Second)
		servers.Go(func() {
			if err := health.Start(ctx, ln); err != nil {
				log.Error(err, "healthz server stopped")
			}
		})
		log.Info("serving /livez", "address", ln.Addr().String())
	}

	if !o.leaderElect {
		err = runControllers(ctx, o, names, factory, base)
	} else {
		err = leaderElect(ctx, o, base, func(ctx context.Context) error {
			return runControllers(ctx, o, names, factory, base)
		})
	}
	if err != nil {
		return err
	}
	servers.Wait()
	log.Info("stopped")
	return nil
}

// leaderElect runs work while this process holds the Lease; losing the Lease
// ends the process (the controllers' caches cannot be handed over cleanly).
func leaderElect(ctx context.Context, o *options, base *controllerpkg.Context, work func(context.Context) error) error {
	log := logf.FromContext(ctx, "leader-election")
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.leaderElection.namespace, Name: "cert-manager-controller"},
		Client:     base.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: host + "-" + string(uuid.NewUUID())},
	}
	// A failing controller ends the election (and the process), as it would
	// without leader election.
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workErr := make(chan error, 1)
	lost := false
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.leaderElection.leaseDuration,
		RenewDeadline:   o.leaderElection.renewDeadline,
		RetryPeriod:     o.leaderElection.retryPeriod,
		ReleaseOnCancel: true,
		Name:            "cert-manager-controller",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("acquired the leader Lease", "namespace", o.leaderElection.namespace)
				if err := work(ctx); err != nil {
					workErr <- err
					cancel()
				}
			},
			OnStoppedLeading: func() {
				if parent.Err() == nil {
					lost = true
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	log.Info("waiting for the leader Lease", "namespace", o.leaderElection.namespace, "identity", lock.Identity())
	elector.Run(ctx)
	select {
	case err := <-workErr:
		return err
	default:
	}
	if lost {
		return errors.New("lost the leader Lease")
	}
	return nil
}

func runControllers(ctx context.Context, o *options, names []string, factory *controllerpkg.ContextFactory, base *controllerpkg.Context) error {
	log := logf.FromContext(ctx, "controller")
	// Constructing a controller registers its informers; start the shared
	// informer factories only once every controller is constructed.
	type running struct {
		name string
		ctrl controllerpkg.Interface
	}
	var loops []running
	for _, name := range names {
		ctrl, err := controllerpkg.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("constructing controller %s: %w", name, err)
		}
		loops = append(loops, running{name, ctrl})
	}
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.SharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	if base.GatewaySolverEnabled {
		base.GWShared.Start(ctx.Done())
	}

	errs := make(chan error, len(loops))
	var wg sync.WaitGroup
	for _, loop := range loops {
		log.Info("starting controller", "controller", loop.name)
		wg.Go(func() {
			if err := loop.ctrl.Run(o.workers, ctx); err != nil {
				errs <- fmt.Errorf("controller %s: %w", loop.name, err)
			}
		})
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
	}
	select {
	case <-done:
	case <-time.After(o.shutdownTimeout):
		log.Info("controllers did not stop in time", "timeout", o.shutdownTimeout)
	}
	return nil
}

func main() {
	o := &options{logging: logsapi.NewLoggingConfiguration()}
	fs := newFlags(o)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(2)
	}
	if o.showVersion {
		fmt.Println(util.AppVersion)
		return
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(o.featureGates); err != nil {
		fmt.Fprintf(os.Stderr, "error: --feature-gates: %v\n", err)
		os.Exit(2)
	}
	logf.InitLogs()
	if err := logf.ValidateAndApply(o.logging); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(2)
	}
	defer logf.FlushLogs()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, klog.Background(), "cert-manager")
	logf.FromContext(ctx).Info("starting cert-manager controllers", "version", util.AppVersion)
	if err := run(ctx, o); err != nil {
		logf.FromContext(ctx).Error(err, "exiting")
		logf.FlushLogs()
		os.Exit(1)
	}
}
