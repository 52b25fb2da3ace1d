// validate: reads Kubernetes manifests (YAML documents, e.g. `helm template` output) on
// stdin and decodes each strictly into the Kubernetes API's own Go types (k8s.io/api):
// an unknown field, a duplicate field, a mistyped value or an unknown kind fails. No cluster
// and no downloaded JSON schemas are needed. Prints one line per object; exits 1 on any
// failure. With `-configmaps DIR`, every ConfigMap's data entries are also written to
// DIR/<key> (so the configuration files they carry can be checked by their program).
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

func main() {
	configmaps := flag.String("configmaps", "", "write ConfigMap data entries into this directory")
	flag.Parse()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	decoder := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	objects, failures := 0, 0
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "reading the manifests: %v\n", err)
			os.Exit(2)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			failures++
			fmt.Printf("INVALID %v\n%s\n", err, doc)
			continue
		}
		name := ""
		if m, err := meta.Accessor(obj); err == nil {
			name = m.GetName()
		}
		objects++
		fmt.Printf("ok %s/%s %s\n", gvk.GroupVersion(), gvk.Kind, name)
		if cm, isConfigMap := obj.(*corev1.ConfigMap); isConfigMap && *configmaps != "" {
			for key, value := range cm.Data {
				path := filepath.Join(*configmaps, filepath.Base(key))
				if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
					fmt.Fprintf(os.Stderr, "writing %s: %v\n", path, err)
					os.Exit(2)
				}
			}
		}
	}
	if failures > 0 || objects == 0 {
		fmt.Printf("%d valid, %d invalid\n", objects, failures)
		os.Exit(1)
	}
	fmt.Printf("%d valid\n", objects)
}

// stripComments drops whole-line YAML comments (a document of only comments is empty).
func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
