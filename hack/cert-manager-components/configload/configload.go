// Package configload reads a cert-manager component's configuration the way
// upstream's commands do: the component's defaults, then the --config file if
// one is named (relative paths in it are taken relative to the file), then the
// command-line flags again over both, so a flag always wins; then, as
// upstream's commands start, --version, validation, the feature gates and the
// logging flags. The webhook and the cainjector differ only in their types,
// which the caller passes in.
package configload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
	logsapi "k8s.io/component-base/logs/api/v1"

	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"
)

// FlagSet declares a component's flags on cfg; --config and --version write
// to configPath and showVersion.
type FlagSet[T any] func(cfg *T, configPath *string, showVersion *bool) *pflag.FlagSet

// Decode reads a --config file's contents: the configuration it describes and
// the path fields in it (to be made relative to the file).
type Decode[T any] func(data []byte) (*T, []*string, error)

// Load returns the configuration and whether --version was asked for.
func Load[T any](args []string, defaults func() (*T, error), flags FlagSet[T], decode Decode[T]) (*T, bool, error) {
	cfg, err := defaults()
	if err != nil {
		return nil, false, err
	}
	var configPath string
	var showVersion bool
	if err := flags(cfg, &configPath, &showVersion).Parse(args); err != nil {
		return nil, false, err
	}
	if configPath == "" || showVersion {
		return cfg, showVersion, nil
	}
	data, err := os.ReadFile(configPath)
	if err != nil {
		return nil, false, fmt.Errorf("--config: %w", err)
	}
	cfg, refs, err := decode(data)
	if err != nil {
		return nil, false, fmt.Errorf("--config %s: %w", configPath, err)
	}
	for _, ref := range refs {
		if *ref != "" && !filepath.IsAbs(*ref) {
			*ref = filepath.Join(filepath.Dir(configPath), *ref)
		}
	}
	if err := flags(cfg, &configPath, &showVersion).Parse(args); err != nil {
		return nil, false, err
	}
	return cfg, showVersion, nil
}

// Component is what Start needs of one component's configuration type.
type Component[T any] struct {
	Defaults func() (*T, error)
	Flags    FlagSet[T]
	Decode   Decode[T]
	Validate func(*T) field.ErrorList
	// The configuration's feature gates and logging settings.
	FeatureGates func(*T) map[string]bool
	Logging      func(*T) *logsapi.LoggingConfiguration
}

// Start loads the configuration from args and prepares the process as
// upstream's commands do: --help exits 0, --version prints the version and
// exits 0, and a bad flag, file, configuration, feature gate or logging
// setting is one line on stderr and exit 2. The caller defers
// logf.FlushLogs().
func Start[T any](args []string, c Component[T]) *T {
	cfg, showVersion, err := Load(args, c.Defaults, c.Flags, c.Decode)
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fail("%v", err)
	}
	if showVersion {
		fmt.Println(util.AppVersion)
		os.Exit(0)
	}
	if errs := c.Validate(cfg); len(errs) > 0 {
		fail("invalid configuration: %v", errs.ToAggregate())
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(c.FeatureGates(cfg)); err != nil {
		fail("--feature-gates: %v", err)
	}
	logf.InitLogs()
	if err := logf.ValidateAndApply(c.Logging(cfg)); err != nil {
		fail("%v", err)
	}
	return cfg
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	os.Exit(2)
}
