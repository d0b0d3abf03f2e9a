/**
 * Offline validation of Kubernetes objects, with nothing fetched at run time: each object is checked twice.
 * 1. Against the API's JSON schema, as compiled into the npm packages kubernetes-models (built-in kinds),
 *    @kubernetes-models/prometheus-operator and @kubernetes-models/cert-manager (custom resources): types,
 *    required fields, enums, formats. Those schemas accept unknown fields, so a misspelt field would pass.
 * 2. For built-in kinds, against the field lists of @kubernetes/client-node's generated models (the same
 *    OpenAPI document, one class per type with its attribute map): every field of the object, at every
 *    depth, must be one the API defines. A misspelt `readinesProbe` fails here.
 */

/** A rendered Kubernetes object, as parsed from YAML. */
export interface KubernetesObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly [key: string]: unknown };
  readonly [key: string]: unknown;
}

interface ModelClass {
  new (data: unknown): { validate(): void };
}

interface AttributeType {
  readonly baseName: string;
  readonly type: string;
}

interface GeneratedModel {
  getAttributeTypeMap(): readonly AttributeType[];
}

/** The module of kubernetes-models (or a CRD package) that holds the models of one apiVersion. */
function modelModuleFor(apiVersion: string): string {
  if (apiVersion.startsWith('monitoring.coreos.com/')) return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  if (apiVersion.startsWith('cert-manager.io/')) return `@kubernetes-models/cert-manager/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

/** True for the kinds @kubernetes/client-node has generated models of (the API's own, not CRDs). */
function isBuiltIn(apiVersion: string): boolean {
  const group = apiVersion.includes('/') ? apiVersion.slice(0, apiVersion.indexOf('/')) : '';
  return group === '' || !group.includes('.') || group.endsWith('.k8s.io');
}

/** The client-node model name of a kind: apps/v1 StatefulSet is V1StatefulSet. */
function generatedModelName(apiVersion: string, kind: string): string {
  const version = apiVersion.slice(apiVersion.lastIndexOf('/') + 1);
  return `${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
}

let generatedModels: Record<string, GeneratedModel> | undefined;

async function loadGeneratedModels(): Promise<Record<string, GeneratedModel>> {
  // client-node does not re-export its generated models from the package root; the module path is stable
  // within the 1.4 line that package.json pins.
  generatedModels ??= (await import('@kubernetes/client-node/dist/gen/models/all.js')) as unknown as Record<
    string,
    GeneratedModel
  >;
  return generatedModels;
}

const LEAF_TYPES = new Set(['string', 'number', 'boolean', 'Date', 'any', 'object', 'IntOrString', 'RuntimeRawExtension']);

/** Paths (a.b[0].c) of the fields in `value` that the API type `type` does not define. */
function unknownFields(value: unknown, type: string, models: Record<string, GeneratedModel>, path: string): string[] {
  if (value === null || value === undefined) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array !== null) {
    if (!Array.isArray(value)) return [`${path} (expected a list)`];
    return value.flatMap((item, index) => unknownFields(item, array[1]!, models, `${path}[${index}]`));
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map !== null) {
    if (typeof value !== 'object' || Array.isArray(value)) return [`${path} (expected a map)`];
    return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) =>
      unknownFields(item, map[1]!, models, `${path}.${key}`),
    );
  }
  if (LEAF_TYPES.has(type)) return [];
  const model = models[type];
  if (model === undefined) throw new Error(`no generated model ${type} (at ${path})`);
  if (typeof value !== 'object' || Array.isArray(value)) return [`${path} (expected an object of ${type})`];
  const attributes = new Map(model.getAttributeTypeMap().map((attribute) => [attribute.baseName, attribute.type]));
  return Object.entries(value as Record<string, unknown>).flatMap(([key, item]) => {
    const attributeType = attributes.get(key);
    if (attributeType === undefined) return [`${path}.${key}`];
    return unknownFields(item, attributeType, models, `${path}.${key}`);
  });
}

/**
 * Validates one object offline; resolves to the list of problems (empty when it is valid). Throws when the
 * kind is one the packages do not know, so that a new kind cannot slip through unchecked.
 */
export async function validateKubernetesObject(object: KubernetesObject): Promise<string[]> {
  const where = `${object.kind}/${object.metadata.name}`;
  const module = (await import(modelModuleFor(object.apiVersion))) as Record<string, ModelClass | undefined>;
  const Model = module[object.kind];
  if (Model === undefined) throw new Error(`${where}: no schema for ${object.apiVersion} ${object.kind}`);
  const problems: string[] = [];
  try {
    new Model(object).validate();
  } catch (error) {
    problems.push(`${where}: ${(error as Error).message}`);
  }
  if (isBuiltIn(object.apiVersion)) {
    const models = await loadGeneratedModels();
    const typeName = generatedModelName(object.apiVersion, object.kind);
    for (const field of unknownFields(object, typeName, models, typeName)) problems.push(`${where}: unknown field ${field}`);
  }
  return problems;
}
