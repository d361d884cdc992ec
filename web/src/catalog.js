// The catalog: a tree of sources → schemas → tables and views → columns with types, with a
// preview per dataset and forms to create a source, promote a file or folder to a table,
// save the editor's SQL as a view, and drop them. Clicking a name puts it in the editor.
import * as api from './api.js';
import { h, fill, ident } from './dom.js';

const enc = encodeURIComponent;

/** Everything the user may see: `{sources, schemas: [{name, datasets: [...]}]}`. */
export async function loadCatalog() {
  const overview = await api.json('/api/v1/catalog');
  const schemas = await Promise.all(overview.schemas.map(async (name) => {
    try {
      const { datasets } = await api.json(`/api/v1/catalog/schemas/${enc(name)}/datasets`);
      return { name, datasets };
    } catch {
      return { name, datasets: [] };
    }
  }));
  return { sources: overview.sources, schemas };
}

/** The catalog as CodeMirror's completion schema: `{schema: {table: [columns]}}`. */
export function completionSchema(catalog, viewColumns = {}) {
  const out = {};
  for (const schema of catalog.schemas) {
    const tables = {};
    for (const d of schema.datasets) {
      const columns = d.type === 'table' ? d.columns : viewColumns[`${schema.name}.${d.name}`] || [];
      tables[d.name] = columns.map((c) => ({ label: c.name, type: 'property', detail: c.type }));
    }
    out[schema.name] = tables;
  }
  return out;
}

export class CatalogTree {
  constructor({ insert, preview, editorSql, changed }) {
    this.insert = insert;
    this.preview = preview;
    this.editorSql = editorSql;
    this.changed = changed;
    this.tree = h('div', { class: 'tree', testid: 'catalog-tree', role: 'tree' });
    this.forms = h('div', { class: 'forms' });
    this.element = h('aside', { class: 'catalog', 'aria-label': 'Catalog' },
      h('div', { class: 'panel-head' }, h('strong', {}, 'Catalog'),
        h('button', { class: 'link', title: 'Reload', testid: 'catalog-reload', onclick: () => this.changed() }, '↻'),
        h('button', { class: 'link', testid: 'catalog-add', onclick: () => this.showForms() }, '+ Add')),
      this.forms, this.tree);
  }

  draw(catalog) {
    this.catalog = catalog;
    const viewColumns = {};
    const name = (text, what, sqlText) => h('button', { class: `name ${what}`, title: `Insert ${sqlText}`, onclick: () => this.insert(sqlText) }, text);
    const datasetsOf = (schema) => schema.datasets.map((d) => {
      const path = `${ident(schema.name)}.${ident(d.name)}`;
      const columns = d.type === 'table' ? d.columns : [];
      return h('details', { class: 'node dataset', 'data-dataset': `${schema.name}.${d.name}` },
        h('summary', {}, h('span', { class: `icon ${d.type}` }, d.type === 'view' ? '◇' : '▦'), name(d.name, d.type, path),
          h('span', { class: 'actions' },
            h('button', { class: 'link', title: 'Preview', testid: 'preview', onclick: (e) => { e.preventDefault(); this.preview(`SELECT * FROM ${path} LIMIT 100`); } }, 'preview'),
            h('button', { class: 'link danger', title: 'Drop', onclick: (e) => { e.preventDefault(); this.drop(schema.name, d); } }, 'drop'))),
        d.type === 'view' ? h('div', { class: 'muted view-sql', title: d.sql }, d.sql.slice(0, 120)) : null,
        h('ul', {}, columns.map((c) => h('li', {}, name(c.name, 'column', ident(c.name)), h('span', { class: 'type' }, c.type)))));
    });
    fill(this.tree,
      h('details', { class: 'node', open: true }, h('summary', {}, 'Sources'),
        h('ul', {}, catalog.sources.map((s) => h('li', { 'data-source': s.name },
          h('span', { class: 'name' }, s.name), h('span', { class: 'type' }, ` ${s.config.type}`),
          h('button', { class: 'link danger', title: 'Drop source', onclick: () => this.dropSource(s) }, 'drop'))))),
      catalog.schemas.map((schema) => h('details', { class: 'node schema', open: true, 'data-schema': schema.name },
        h('summary', {}, name(schema.name, 'schema', ident(schema.name))),
        datasetsOf(schema))));
    return viewColumns;
  }

  async drop(schema, d) {
    if (!confirm(`Drop ${d.type} ${schema}.${d.name}?`)) return;
    try {
      await api.json(`/api/v1/catalog/schemas/${enc(schema)}/datasets/${enc(d.name)}?version=${d.version}`, { method: 'DELETE' });
      this.changed();
    } catch (e) { alert(e.message); }
  }

  async dropSource(s) {
    if (!confirm(`Drop source ${s.name}?`)) return;
    try {
      await api.json(`/api/v1/catalog/sources/${enc(s.name)}?version=${s.version}`, { method: 'DELETE' });
      this.changed();
    } catch (e) { alert(e.message); }
  }

  showForms() {
    if (this.forms.childElementCount) { fill(this.forms); return; }
    const message = h('div', { class: 'form-message', role: 'status' });
    const act = async (fn) => {
      fill(message);
      try { await fn(); fill(message, h('span', { class: 'ok' }, 'Done.')); this.changed(); }
      catch (e) { fill(message, h('span', { class: 'error', testid: 'error' }, e.message)); }
    };
    const schemaNames = () => (this.catalog?.schemas || []).map((s) => h('option', { value: s.name }, s.name));
    const sourceNames = () => (this.catalog?.sources || []).map((s) => h('option', { value: s.name }, s.name));

    // A source: a local directory or an S3 bucket.
    const srcName = h('input', { placeholder: 'name', 'aria-label': 'Source name', testid: 'source-name' });
    const srcType = h('select', { 'aria-label': 'Source type', testid: 'source-type' }, h('option', { value: 'local' }, 'local directory'), h('option', { value: 's3' }, 'S3 bucket'));
    const srcRoot = h('input', { placeholder: '/path/to/data or bucket', 'aria-label': 'Root or bucket', testid: 'source-root' });
    const srcEndpoint = h('input', { placeholder: 'S3 endpoint (optional)', 'aria-label': 'S3 endpoint' });
    const srcKey = h('input', { placeholder: 'access key id (optional)', 'aria-label': 'Access key id' });
    const srcSecret = h('input', { type: 'password', placeholder: 'secret access key', 'aria-label': 'Secret access key' });
    const createSource = () => act(() => {
      const config = srcType.value === 'local' ? { type: 'local', root: srcRoot.value }
        : { type: 's3', bucket: srcRoot.value, endpoint: srcEndpoint.value || null, access_key_id: srcKey.value || null,
          secret_access_key: srcSecret.value || null, path_style: !!srcEndpoint.value, allow_http: srcEndpoint.value.startsWith('http:') };
      return api.json('/api/v1/catalog/sources', { method: 'POST', body: { name: srcName.value, config } });
    });

    // Promote a file or folder of a source to a table.
    const tSchema = h('select', { 'aria-label': 'Schema', testid: 'promote-schema' }, schemaNames());
    const tName = h('input', { placeholder: 'table name', 'aria-label': 'Table name', testid: 'promote-name' });
    const tSource = h('select', { 'aria-label': 'Source', testid: 'promote-source' }, sourceNames());
    const tPath = h('input', { placeholder: 'file or folder in the source', 'aria-label': 'Path', testid: 'promote-path' });
    const tFormat = h('select', { 'aria-label': 'Format' }, ['', 'parquet', 'csv', 'json'].map((f) => h('option', { value: f }, f || 'guess format')));
    const promote = () => act(() => api.json(`/api/v1/catalog/schemas/${enc(tSchema.value)}/datasets`, {
      method: 'POST', body: { type: 'table', name: tName.value, source: tSource.value, path: tPath.value, format: tFormat.value || undefined },
    }));

    // The editor's SQL as a view.
    const vSchema = h('select', { 'aria-label': 'Schema', testid: 'view-schema' }, schemaNames());
    const vName = h('input', { placeholder: 'view name', 'aria-label': 'View name', testid: 'view-name' });
    const saveView = () => act(() => api.json(`/api/v1/catalog/schemas/${enc(vSchema.value)}/datasets`, {
      method: 'POST', body: { type: 'view', name: vName.value, sql: this.editorSql() },
    }));

    // A schema.
    const sName = h('input', { placeholder: 'schema name', 'aria-label': 'Schema name', testid: 'schema-name' });
    const createSchema = () => act(() => api.json('/api/v1/catalog/schemas', { method: 'POST', body: { name: sName.value } }));

    fill(this.forms,
      h('form', { onsubmit: (e) => { e.preventDefault(); createSource(); } }, h('h4', {}, 'New source'), srcName, srcType, srcRoot, srcEndpoint, srcKey, srcSecret, h('button', { testid: 'source-create' }, 'Create source')),
      h('form', { onsubmit: (e) => { e.preventDefault(); createSchema(); } }, h('h4', {}, 'New schema'), sName, h('button', {}, 'Create schema')),
      h('form', { onsubmit: (e) => { e.preventDefault(); promote(); } }, h('h4', {}, 'Promote a file or folder'), tSchema, tName, tSource, tPath, tFormat, h('button', { testid: 'promote' }, 'Promote')),
      h('form', { onsubmit: (e) => { e.preventDefault(); saveView(); } }, h('h4', {}, "Save the editor's SQL as a view"), vSchema, vName, h('button', { testid: 'view-create' }, 'Create view')),
      message);
  }
}
