// Package configload reads a cert-manager component's configuration the way
// upstream's commands do: the component's defaults, then the --config file if
// one is named (relative paths in it are taken relative to the file), then the
// command-line flags again over both, so a flag always wins. The webhook and
// the cainjector differ only in their types, which the caller passes in.
package configload

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
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
