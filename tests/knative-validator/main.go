// knative-validator checks UDB's Kubernetes manifests with Knative's own API code.
//
// Every YAML document is decoded strictly (unknown or duplicate fields are errors) into the Go
// type its apiVersion and kind name: Knative Serving, Eventing and Eventing Kafka broker types
// get SetDefaults and Validate(apis.WithinCreate(ctx)), as their admission webhooks run them on
// create, with the eventing feature flags in the context; Kubernetes kinds (ConfigMap, Secret,
// NetworkPolicy, Role, ...) are decoded into k8s.io/api types and their metadata checked. A
// directory holding a kustomization.yaml is rendered with kustomize's own library first.
//
// Each rendered kustomization is then checked as the set applied together (contract.go): every
// reference resolves, the broker class, effective Trigger delivery, requests within limits,
// probe forms, filter keys (-extension), and -previous runs the update checks (WithinUpdate).
//
//	knative-validator [-json] [-feature name=Flag]... [-extension NAME]... [-external FILE]...
//	                  [-previous FILE] [-recreate Kind/name]... PATH...   validate; exit 1 on any error
//	knative-validator render DIR                                 print the rendered kustomization
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// The flags UDB's manifests rely on, on top of the release's defaults: Trigger delivery
// timeouts, and the Trigger `filters` dialect (GA since Knative 1.14; named for older clusters).
var defaultFeatures = map[string]string{
	"delivery-timeout":    "Enabled",
	"new-trigger-filters": "Enabled",
}

type featureFlags map[string]string

func (f featureFlags) String() string { return fmt.Sprint(map[string]string(f)) }

func (f featureFlags) Set(value string) error {
	name, flagValue, ok := strings.Cut(value, "=")
	if !ok || name == "" || flagValue == "" {
		return fmt.Errorf("expected name=Flag (e.g. delivery-timeout=Enabled), found %q", value)
	}
	f[name] = flagValue
	return nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "render" {
		os.Exit(renderMain(os.Args[2:]))
	}
	os.Exit(validateMain(os.Args[1:]))
}

func renderMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: knative-validator render DIR")
		return 2
	}
	out, err := render(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write(out)
	return 0
}

func validateMain(args []string) int {
	fs := flag.NewFlagSet("knative-validator", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "one JSON object per finding instead of text lines")
	features := featureFlags{}
	for k, v := range defaultFeatures {
		features[k] = v
	}
	fs.Var(features, "feature", "an eventing feature flag, name=Enabled|Disabled|Allowed (repeatable)")
	fs.Func("extension", "a CloudEvents extension the events carry (repeatable; with any, Trigger filter keys are checked)",
		func(v string) error { knownExtensions[v] = true; return nil })
	fs.Func("external", "a manifest of objects created out of band (e.g. Secrets): references may name them (repeatable)",
		func(v string) error {
			data, err := os.ReadFile(v)
			if err != nil {
				return err
			}
			docs, err := splitDocuments(data)
			externalDocs = append(externalDocs, docs...)
			return err
		})
	fs.Func("previous", "the previous release's render: objects in both are validated as updates (WithinUpdate)",
		func(v string) error {
			data, err := os.ReadFile(v)
			if err != nil {
				return err
			}
			return loadPrevious(data)
		})
	fs.Func("recreate", "Kind/name the upgrade deletes and creates anew: no update check (repeatable)",
		func(v string) error { recreated[v] = true; return nil })
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: knative-validator [-json] [-feature name=Flag]... PATH...")
		return 2
	}
	ctx, err := validationContext(features)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var findings []Finding
	for _, path := range fs.Args() {
		findings = append(findings, validatePath(ctx, path)...)
	}
	failed := 0
	for _, f := range findings {
		if f.Level == "error" {
			failed++
		}
		if *asJSON {
			line, _ := json.Marshal(f)
			fmt.Println(string(line))
		} else {
			fmt.Printf("%-7s %s: %s %s", f.Level, f.Source, f.Kind, f.Name)
			if f.Message != "" {
				fmt.Printf(": %s", f.Message)
			}
			fmt.Println()
		}
	}
	if !*asJSON {
		fmt.Printf("%d objects, %d with errors\n", len(findings), failed)
	}
	if failed > 0 || len(findings) == 0 {
		return 1
	}
	return 0
}

// validatePath validates a file, a kustomization directory (rendered), or every *.yaml and
// *.yml file of a plain directory.
func validatePath(ctx context.Context, path string) []Finding {
	info, err := os.Stat(path)
	if err != nil {
		return []Finding{{Source: path, Level: "error", Message: err.Error()}}
	}
	if !info.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return []Finding{{Source: path, Level: "error", Message: err.Error()}}
		}
		return validateStream(ctx, path, data)
	}
	if isKustomization(path) {
		out, err := render(path)
		if err != nil {
			return []Finding{{Source: path + " (kustomize)", Level: "error", Message: err.Error()}}
		}
		findings := validateStream(ctx, path+" (kustomize)", out)
		// What is applied together must resolve: references among the rendered objects.
		docs, err := splitDocuments(out)
		if err != nil {
			return append(findings, Finding{Source: path + " (kustomize)", Level: "error", Message: err.Error()})
		}
		for index, problems := range referenceProblems(docs, externalDocs) {
			source := fmt.Sprintf("%s (kustomize)#%d", path, index)
			for i := range findings {
				if findings[i].Source != source {
					continue
				}
				if findings[i].Level == "error" {
					findings[i].Message += "; " + strings.Join(problems, "; ")
				} else {
					findings[i].Level, findings[i].Message = "error", strings.Join(problems, "; ")
				}
			}
		}
		return findings
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return []Finding{{Source: path, Level: "error", Message: err.Error()}}
	}
	var names []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var findings []Finding
	for _, name := range names {
		findings = append(findings, validatePath(ctx, filepath.Join(path, name))...)
	}
	return findings
}

func isKustomization(dir string) bool {
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// validateStream validates every document of a multi-document YAML stream. A kustomization
// file met on its own is skipped: it is input to kustomize, not an object of the cluster.
func validateStream(ctx context.Context, source string, data []byte) []Finding {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var findings []Finding
	for index := 0; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			findings = append(findings, Finding{Source: source, Level: "error", Message: "reading YAML: " + err.Error()})
			break
		}
		var probe map[string]interface{}
		if err := sigsyaml.Unmarshal(doc, &probe); err == nil && len(probe) == 0 {
			continue // only comments
		}
		if kind, _ := probe["kind"].(string); kind == "Kustomization" || kind == "Component" {
			continue
		}
		findings = append(findings, validateDocument(ctx, fmt.Sprintf("%s#%d", source, index), doc))
	}
	return findings
}

// Objects created out of band (-external), for reference resolution.
var externalDocs [][]byte

// splitDocuments returns the non-empty documents of a YAML stream, kustomization files left out,
// in the order (and so with the indexes) validateStream numbers them.
func splitDocuments(data []byte) ([][]byte, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		docs = append(docs, doc)
	}
}

func sigsyamlUnmarshalJSON(data []byte, into interface{}) error {
	return json.Unmarshal(data, into)
}

// render builds a kustomization with kustomize's library, as `kubectl apply -k` does (files
// outside the kustomization root only through another kustomization).
func render(dir string) ([]byte, error) {
	kustomizer := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := kustomizer.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return resources.AsYaml()
}
