// Package mlog is a small stand-in for monis.app/mlog (see go.mod for why):
// the same names, structured logging through klog, levels mapped onto klog
// verbosity (info 0, debug 4, trace 6, all 10).
package mlog

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

type LogLevel string

const (
	LevelWarning LogLevel = "warning"
	LevelInfo    LogLevel = "info"
	LevelDebug   LogLevel = "debug"
	LevelTrace   LogLevel = "trace"
	LevelAll     LogLevel = "all"
)

type LogFormat string

const (
	FormatText LogFormat = "text"
	FormatJSON LogFormat = "json"
)

type LogSpec struct {
	Level  LogLevel
	Format LogFormat
}

var verbosity = map[LogLevel]int{LevelWarning: 0, LevelInfo: 0, LevelDebug: 4, LevelTrace: 6, LevelAll: 10}

var current = LevelInfo

// Logger is the subset of mlog's logger the webhook uses.
type Logger interface {
	Error(msg string, err error, keysAndValues ...any)
	Warning(msg string, keysAndValues ...any)
	Info(msg string, keysAndValues ...any)
	Debug(msg string, keysAndValues ...any)
	Trace(msg string, keysAndValues ...any)
	All(msg string, keysAndValues ...any)
	WithValues(keysAndValues ...any) Logger
	WithName(name string) Logger
}

type logger struct{ l logr.Logger }

func New() Logger { return logger{klog.NewKlogr()} }

func (g logger) Error(msg string, err error, kv ...any) { g.l.Error(err, msg, kv...) }
func (g logger) Warning(msg string, kv ...any)          { g.l.Info(msg, append(kv, "warning", true)...) }
func (g logger) Info(msg string, kv ...any)             { g.l.Info(msg, kv...) }
func (g logger) Debug(msg string, kv ...any)            { g.l.V(verbosity[LevelDebug]).Info(msg, kv...) }
func (g logger) Trace(msg string, kv ...any)            { g.l.V(verbosity[LevelTrace]).Info(msg, kv...) }
func (g logger) All(msg string, kv ...any)              { g.l.V(verbosity[LevelAll]).Info(msg, kv...) }
func (g logger) WithValues(kv ...any) Logger            { return logger{g.l.WithValues(kv...)} }
func (g logger) WithName(name string) Logger            { return logger{g.l.WithName(name)} }

// Logr returns the logr.Logger handed to controller-runtime.
func Logr() logr.Logger { return klog.NewKlogr() }

// Setup returns the function that flushes buffered log lines on exit.
func Setup() func() { return klog.Flush }

// ValidateAndSetLogLevelAndFormatGlobally sets klog's verbosity from the level;
// the format is always klog's text format in this stand-in.
func ValidateAndSetLogLevelAndFormatGlobally(_ context.Context, spec LogSpec) error {
	level := spec.Level
	if level == "" {
		level = LevelInfo
	}
	v, ok := verbosity[level]
	if !ok {
		return fmt.Errorf("invalid log level %q (use warning, info, debug, trace or all)", spec.Level)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	if err := fs.Set("v", strconv.Itoa(v)); err != nil {
		return err
	}
	current = level
	return nil
}

// Enabled reports whether messages at level are logged.
func Enabled(level LogLevel) bool { return verbosity[level] <= verbosity[current] }

// Fatal logs err and exits non-zero.
func Fatal(err error, kv ...any) {
	klog.NewKlogr().Error(err, "fatal", kv...)
	klog.Flush()
	os.Exit(1)
}
