// Package conformance runs cert-manager's issuer conformance specs (the
// Certificates suite and the CertificateSigningRequests suite, as published in
// the cert-manager module at the version pinned in go.mod) against one issuer
// named on the command line. It is built as a test binary
// (`go test -c`, see akv_devcluster.binaries) and run by
// tests/e2e/test_e2e_conformance.py, once per issuer reference.
//
// Why this module pins cert-manager v1.11.5 although the dev cluster runs a
// newer cert-manager: the specs live under test/e2e/suite/conformance, which
// is part of the root module github.com/cert-manager/cert-manager only up to
// v1.11.x. From v1.12 on test/e2e is its own module
// (github.com/cert-manager/cert-manager/e2e-tests), which the Go module proxy
// does not serve (404 for @v/list, 403 for any version), and the standalone
// copy on issuer-lib's add_conformance_tests branch (module path
// "conformance", no tag) is refused too. v1.11.5 is the newest version of the
// maintained specs the proxy serves; docs/e2e.md lists what later versions
// added.
//
// This file only wires flags to the upstream Suite types: the specs, their
// validations and the framework (a fresh namespace per spec) are upstream
// code.
package conformance

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"
	"github.com/cert-manager/cert-manager/test/e2e/framework"
	"github.com/cert-manager/cert-manager/test/e2e/framework/helper/featureset"
	"github.com/cert-manager/cert-manager/test/e2e/suite/conformance/certificates"
	"github.com/cert-manager/cert-manager/test/e2e/suite/conformance/certificatesigningrequests"
)

// knownFeatures are the feature names the pinned suite tags its specs with;
// an unknown name in --unsupported-features is a typo, not a feature.
var knownFeatures = []featureset.Feature{
	featureset.IPAddressFeature, featureset.DurationFeature, featureset.WildcardsFeature,
	featureset.ECDSAFeature, featureset.ReusePrivateKeyFeature, featureset.URISANsFeature,
	featureset.EmailSANsFeature, featureset.CommonNameFeature, featureset.KeyUsagesFeature,
	featureset.OnlySAN, featureset.SaveCAToSecret, featureset.SaveRootCAToSecret,
	featureset.Ed25519FeatureSet, featureset.IssueCAFeature, featureset.LongDomainFeatureSet,
	featureset.LiteralSubjectFeature,
}

type options struct {
	kubeconfig     string
	kubectl        string
	suite          string
	name           string
	issuerRef      string
	issuerManifest string
	signerName     string
	featureGates   string
	unsupported    string
	domain         string
	readyTimeout   time.Duration
}

var opts options

func init() {
	flag.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (admin: the specs create namespaces and approve CSRs)")
	flag.StringVar(&opts.kubectl, "kubectl", "kubectl", "kubectl the framework uses to describe objects of a failed spec")
	flag.StringVar(&opts.suite, "suite", "", "certificates (Certificates through CertificateRequests) or csr (Kubernetes CertificateSigningRequests)")
	flag.StringVar(&opts.name, "name", "", "the issuer's name in spec texts")
	flag.StringVar(&opts.issuerRef, "issuer-ref", "", "group/Kind/name of an existing cluster-scoped issuer (certificates suite)")
	flag.StringVar(&opts.issuerManifest, "issuer-manifest", "", "YAML file created in every spec's namespace (an Issuer, and e.g. its Secret); its object of kind Issuer is the issuer under test, waited for until Ready")
	flag.StringVar(&opts.signerName, "signer-name", "", "signerName of the CSR suite; {namespace} and {name} stand for the spec's namespace and the --issuer-manifest Issuer's name")
	flag.StringVar(&opts.featureGates, "feature-gates", "", "cert-manager feature gates the specs consult (name=bool,...), as set on the controller under test")
	flag.StringVar(&opts.unsupported, "unsupported-features", "", "comma-separated features the issuer does not support (their specs are not defined)")
	flag.StringVar(&opts.domain, "domain", "example.com", "DNS suffix of the names requested")
	flag.DurationVar(&opts.readyTimeout, "issuer-ready-timeout", 2*time.Minute, "how long an --issuer-manifest Issuer may take to become Ready")
}

func (o *options) validate() error {
	var errs []string
	if o.kubeconfig == "" {
		errs = append(errs, "--kubeconfig is required")
	}
	if o.name == "" {
		errs = append(errs, "--name is required")
	}
	switch o.suite {
	case "certificates":
		if (o.issuerRef == "") == (o.issuerManifest == "") {
			errs = append(errs, "the certificates suite needs exactly one of --issuer-ref and --issuer-manifest")
		}
		if o.issuerRef != "" && len(strings.Split(o.issuerRef, "/")) != 3 {
			errs = append(errs, fmt.Sprintf("--issuer-ref %q is not group/Kind/name", o.issuerRef))
		}
		if o.signerName != "" {
			errs = append(errs, "--signer-name belongs to the csr suite")
		}
	case "csr":
		if o.signerName == "" {
			errs = append(errs, "the csr suite needs --signer-name")
		}
		if o.issuerRef != "" {
			errs = append(errs, "--issuer-ref belongs to the certificates suite")
		}
		if strings.Contains(o.signerName, "{") && o.issuerManifest == "" {
			errs = append(errs, "a --signer-name template needs --issuer-manifest")
		}
	default:
		errs = append(errs, fmt.Sprintf("--suite must be certificates or csr, not %q", o.suite))
	}
	if _, err := o.features(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func (o *options) features() (featureset.FeatureSet, error) {
	set := featureset.NewFeatureSet()
	for _, raw := range strings.Split(o.unsupported, ",") {
		name := strings.TrimSpace(raw)
		if name == "" {
			continue
		}
		found := false
		for _, known := range knownFeatures {
			if string(known) == name {
				set.Add(known)
				found = true
			}
		}
		if !found {
			names := make([]string, 0, len(knownFeatures))
			for _, known := range knownFeatures {
				names = append(names, string(known))
			}
			sort.Strings(names)
			return nil, fmt.Errorf("--unsupported-features: unknown feature %q (known: %s)", name, strings.Join(names, ", "))
		}
	}
	return set, nil
}

// manifest is the parsed --issuer-manifest.
type manifest struct {
	objects []*unstructured.Unstructured
	issuer  int
}

func readManifest(path string) (*manifest, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	decoder := utilyaml.NewYAMLOrJSONDecoder(file, 4096)
	m := &manifest{issuer: -1}
	for {
		obj := &unstructured.Unstructured{}
		if err := decoder.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if obj.GetKind() == "Issuer" {
			if m.issuer >= 0 {
				return nil, fmt.Errorf("%s holds more than one Issuer", path)
			}
			m.issuer = len(m.objects)
		}
		m.objects = append(m.objects, obj)
	}
	if m.issuer < 0 {
		return nil, fmt.Errorf("%s holds no object of kind Issuer", path)
	}
	return m, nil
}

// provisioned is what one spec's CreateIssuerFunc made in its namespace.
type provisioned struct {
	objects []*unstructured.Unstructured
}

func (m *manifest) create(ctx context.Context, f *framework.Framework) (*provisioned, cmmeta.ObjectReference) {
	By("Creating the objects of --issuer-manifest in " + f.Namespace.Name)
	made := &provisioned{}
	var ref cmmeta.ObjectReference
	for i, template := range m.objects {
		obj := template.DeepCopy()
		obj.SetNamespace(f.Namespace.Name)
		Expect(f.CRClient.Create(ctx, obj)).To(Succeed(), "creating %s %s", obj.GetKind(), obj.GetName()+obj.GetGenerateName())
		made.objects = append(made.objects, obj)
		if i == m.issuer {
			gv, err := schema.ParseGroupVersion(obj.GetAPIVersion())
			Expect(err).NotTo(HaveOccurred())
			ref = cmmeta.ObjectReference{Group: gv.Group, Kind: obj.GetKind(), Name: obj.GetName()}
			waitReady(ctx, f, obj)
		}
	}
	return made, ref
}

func waitReady(ctx context.Context, f *framework.Framework, obj *unstructured.Unstructured) {
	By("Waiting for Issuer " + obj.GetName() + " to be Ready")
	key := crclient.ObjectKeyFromObject(obj)
	var last []interface{}
	err := wait.PollImmediate(250*time.Millisecond, opts.readyTimeout, func() (bool, error) {
		current := &unstructured.Unstructured{}
		current.SetGroupVersionKind(obj.GroupVersionKind())
		if err := f.CRClient.Get(ctx, key, current); err != nil {
			return false, err
		}
		conditions, _, _ := unstructured.NestedSlice(current.Object, "status", "conditions")
		last = conditions
		for _, c := range conditions {
			cond, _ := c.(map[string]interface{})
			if cond["type"] == "Ready" && cond["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	Expect(err).NotTo(HaveOccurred(), "Issuer %s not Ready; conditions: %v", obj.GetName(), last)
}

func (p *provisioned) delete(ctx context.Context, f *framework.Framework) {
	By("Deleting the objects of --issuer-manifest")
	for i := len(p.objects) - 1; i >= 0; i-- {
		err := f.CRClient.Delete(ctx, p.objects[i])
		Expect(crclient.IgnoreNotFound(err)).To(Succeed())
	}
}

// deleteCertManagerObjects removes what the spec made in its namespace. No
// kube-controller-manager runs on the dev cluster, so the namespace the
// framework deletes stays Terminating with its objects in it; cert-manager
// would keep reconciling (and later renewing) them.
func deleteCertManagerObjects(ctx context.Context, f *framework.Framework) {
	By("Deleting the spec's Certificates and CertificateRequests")
	ns := f.Namespace.Name
	cm := f.CertManagerClientSet.CertmanagerV1()
	Expect(cm.Certificates(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})).To(Succeed())
	Expect(cm.CertificateRequests(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})).To(Succeed())
}

// The Suites' issuer functions have no per-spec state argument, so each
// spec's objects are kept here by namespace (specs of one process run one
// after another).
var made = map[string]*provisioned{}

func defineCertificates(unsupported featureset.FeatureSet, m *manifest) {
	ctx := context.Background()
	suite := &certificates.Suite{
		Name:         opts.name,
		DomainSuffix: opts.domain,
		// The suite defines its Ingress specs (cert-manager's ingress-shim
		// makes the Certificate) only for this test type; for an issuer that
		// is not ACME it changes nothing else here: DomainSuffix is set, and
		// the IP the IP-address specs request is the config's IngressIP (set
		// to the suite's usual 127.0.0.1 below).
		HTTP01TestType:      "Ingress",
		UnsupportedFeatures: unsupported,
	}
	if m == nil {
		parts := strings.Split(opts.issuerRef, "/")
		ref := cmmeta.ObjectReference{Group: parts[0], Kind: parts[1], Name: parts[2]}
		suite.CreateIssuerFunc = func(*framework.Framework) cmmeta.ObjectReference { return ref }
		suite.DeleteIssuerFunc = func(f *framework.Framework, _ cmmeta.ObjectReference) {
			deleteCertManagerObjects(ctx, f)
		}
	} else {
		suite.CreateIssuerFunc = func(f *framework.Framework) cmmeta.ObjectReference {
			p, ref := m.create(ctx, f)
			made[f.Namespace.Name] = p
			return ref
		}
		suite.DeleteIssuerFunc = func(f *framework.Framework, _ cmmeta.ObjectReference) {
			deleteCertManagerObjects(ctx, f)
			if p := made[f.Namespace.Name]; p != nil {
				p.delete(ctx, f)
				delete(made, f.Namespace.Name)
			}
		}
	}
	framework.ConformanceDescribe("Certificates", suite.Define)
}

func defineCSRs(unsupported featureset.FeatureSet, m *manifest) {
	ctx := context.Background()
	suite := &certificatesigningrequests.Suite{
		Name:                opts.name,
		DomainSuffix:        opts.domain,
		UnsupportedFeatures: unsupported,
	}
	if m == nil {
		suite.CreateIssuerFunc = func(*framework.Framework) string { return opts.signerName }
	} else {
		suite.CreateIssuerFunc = func(f *framework.Framework) string {
			p, ref := m.create(ctx, f)
			made[f.Namespace.Name] = p
			return strings.NewReplacer("{namespace}", f.Namespace.Name, "{name}", ref.Name).Replace(opts.signerName)
		}
		suite.DeleteIssuerFunc = func(f *framework.Framework, _ string) {
			if p := made[f.Namespace.Name]; p != nil {
				p.delete(ctx, f)
				delete(made, f.Namespace.Name)
			}
		}
	}
	framework.ConformanceDescribe("CertificateSigningRequests", suite.Define)
}

func TestConformance(t *testing.T) {
	if err := opts.validate(); err != nil {
		t.Fatalf("error: %v", err)
	}
	if opts.featureGates != "" {
		if err := utilfeature.DefaultMutableFeatureGate.Set(opts.featureGates); err != nil {
			t.Fatalf("error: --feature-gates: %v", err)
		}
	}
	unsupported, _ := opts.features()
	var m *manifest
	if opts.issuerManifest != "" {
		var err error
		if m, err = readManifest(opts.issuerManifest); err != nil {
			t.Fatalf("error: --issuer-manifest: %v", err)
		}
	}
	framework.DefaultConfig.KubeConfig = opts.kubeconfig
	framework.DefaultConfig.Kubectl = opts.kubectl
	framework.DefaultConfig.Cleanup = true
	framework.DefaultConfig.Addons.ACMEServer.IngressIP = "127.0.0.1"
	if opts.suite == "certificates" {
		defineCertificates(unsupported, m)
	} else {
		defineCSRs(unsupported, m)
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "cert-manager conformance: "+opts.name)
}
