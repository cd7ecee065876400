// Validates every object of rendered manifests with the npm packages
// kubernetes-models and @kubernetes-models/prometheus-operator (which also
// know ServiceMonitor and PrometheusRule).
// Usage: node deploy/validate-models.mjs FILE.yaml... (deploy/check runs it)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.MODELS_DIR + "/");
const yaml = require("js-yaml");

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const dir = process.env.MODELS_DIR;
  const path =
    group === "monitoring.coreos.com"
      ? `${dir}/@kubernetes-models/prometheus-operator/${group}/${version}/${kind}.js`
      : `${dir}/kubernetes-models/${group ? group + "/" : ""}${version}/${kind}.js`;
  const mod = await import(path);
  return mod[kind];
}

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const obj of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!obj) continue;
    const where = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    try {
      const Model = await modelFor(obj.apiVersion, obj.kind);
      new Model(obj).validate();
      checked++;
    } catch (e) {
      failed++;
      console.error(`INVALID ${where}: ${e.message}`);
    }
  }
}
console.log(`kubernetes-models: ${checked} objects valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
