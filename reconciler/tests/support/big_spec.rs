//! Realistic OpenAPI 3.0 documents of a chosen size, generated when a test or bench runs
//! (nothing this big is committed).
//!
//! The shape follows real large specs: resources with a collection path (`GET` list, `POST`
//! create) and an item path (`GET`, `DELETE`), shared `components` (parameters, responses,
//! one schema per resource) referenced with `$ref`, summaries and descriptions on every
//! operation and property, and no YAML anchors or aliases. Padding up to a byte size is done
//! the way vendor specs grow: more component schemas with documented properties.
//!
//! Every path is under `/inventory`, routed to the example's `orders` backend with the
//! example IdP's `orders:*` scopes, so the spec renders in a copy of `config-repo-example/`.

use std::fmt::Write as _;

/// A spec with `paths` paths (two operations each), padded with component schemas to at
/// least `min_bytes` bytes.
pub fn openapi_spec(paths: usize, min_bytes: usize) -> String {
    let resources = paths.div_ceil(2);
    let mut s = String::with_capacity(min_bytes.max(paths * 1200) + 4096);
    s.push_str(
        "openapi: 3.0.3
info:
  title: Inventory API
  version: 1.0.0
  description: |
    Stock levels, warehouses, suppliers and purchase orders of every site.
    Amounts are in minor currency units; timestamps are RFC 3339.
servers:
  - url: https://api.example.com/inventory
    description: Production
x-fleetgate-backend: orders
x-fleetgate-path-prefix: /inventory
security:
  - oauth: ['orders:read']
tags:
  - name: Inventory
    description: Stock and warehouse operations
paths:
",
    );
    for r in 0..resources {
        let collection = format!("/resources{r}/items");
        let item = format!("/resources{r}/items/{{itemId}}");
        let _ = write!(
            s,
            "  {collection}:
    get:
      operationId: listResource{r}Items
      summary: List the items of resource {r}
      description: Returns a page of items of resource {r}, newest first. Use the cursor of a response to read the next page.
      tags: [Inventory]
      parameters:
        - $ref: '#/components/parameters/Limit'
        - $ref: '#/components/parameters/Cursor'
        - name: status
          in: query
          description: Only items in this status.
          schema: {{type: string, enum: [active, archived, pending]}}
      responses:
        '200':
          description: A page of items.
          content:
            application/json:
              schema:
                type: object
                properties:
                  data: {{type: array, items: {{$ref: '#/components/schemas/Resource{r}'}}}}
                  nextCursor: {{type: string, nullable: true}}
        '400': {{$ref: '#/components/responses/BadRequest'}}
        '401': {{$ref: '#/components/responses/Unauthorized'}}
    post:
      operationId: createResource{r}Item
      summary: Create an item of resource {r}
      description: Creates an item. The request is idempotent when it carries an Idempotency-Key header.
      tags: [Inventory]
      security:
        - oauth: ['orders:write']
      parameters:
        - name: Idempotency-Key
          in: header
          description: Makes a retried request safe.
          schema: {{type: string, maxLength: 64}}
      requestBody:
        required: true
        content:
          application/json:
            schema: {{$ref: '#/components/schemas/Resource{r}'}}
      responses:
        '201':
          description: The item was created.
          content:
            application/json:
              schema: {{$ref: '#/components/schemas/Resource{r}'}}
        '400': {{$ref: '#/components/responses/BadRequest'}}
        '409': {{$ref: '#/components/responses/Conflict'}}
"
        );
        if 2 * r + 1 < paths {
            let _ = write!(
                s,
                "  {item}:
    parameters:
      - $ref: '#/components/parameters/ItemId'
    get:
      operationId: getResource{r}Item
      summary: Retrieve an item of resource {r}
      description: Returns one item with its current stock level and the warehouse that holds it.
      tags: [Inventory]
      responses:
        '200':
          description: The item.
          content:
            application/json:
              schema: {{$ref: '#/components/schemas/Resource{r}'}}
        '404': {{$ref: '#/components/responses/NotFound'}}
    delete:
      operationId: deleteResource{r}Item
      summary: Archive an item of resource {r}
      description: Archives the item; it stays readable for 90 days, then it is removed.
      tags: [Inventory]
      security:
        - oauth: ['orders:write']
      responses:
        '204':
          description: The item was archived.
        '404': {{$ref: '#/components/responses/NotFound'}}
"
            );
        }
    }
    s.push_str(
        "components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://auth.example.com/oauth2/token
          scopes:
            orders:read: Read inventory
            orders:write: Change inventory
  parameters:
    ItemId:
      name: itemId
      in: path
      required: true
      description: The item's identifier.
      schema: {type: string, format: uuid}
    Limit:
      name: limit
      in: query
      description: Items per page.
      schema: {type: integer, minimum: 1, maximum: 200, default: 50}
    Cursor:
      name: cursor
      in: query
      description: Opaque pagination cursor from a previous response.
      schema: {type: string}
  responses:
    BadRequest:
      description: The request is malformed or failed validation.
      content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
    Unauthorized:
      description: Missing or invalid access token.
      content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
    NotFound:
      description: The item does not exist.
      content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
    Conflict:
      description: An item with this key exists already.
      content: {application/json: {schema: {$ref: '#/components/schemas/Error'}}}
  schemas:
    Error:
      type: object
      required: [code, message]
      properties:
        code: {type: string, description: Machine-readable error code.}
        message: {type: string, description: What went wrong (for people).}
        requestId: {type: string, description: Quote it when contacting support.}
",
    );
    for r in 0..resources {
        schema(&mut s, &format!("Resource{r}"), r);
    }
    let mut extra = 0;
    while s.len() < min_bytes {
        schema(&mut s, &format!("Model{extra}"), extra);
        extra += 1;
    }
    s
}

/// One component schema with documented properties (about 1.5 KB).
fn schema(s: &mut String, name: &str, n: usize) {
    let _ = write!(
        s,
        "    {name}:
      type: object
      description: A {name} record as stored by the inventory service (revision {n}).
      required: [id, sku, quantity]
      properties:
        id: {{type: string, format: uuid, readOnly: true, description: Assigned by the service.}}
        sku: {{type: string, maxLength: 64, description: The stock keeping unit (unique per site)., example: SKU-{n}}}
        name: {{type: string, description: Display name shown in the catalogue.}}
        quantity: {{type: integer, minimum: 0, description: Units on hand across all warehouses.}}
        reserved: {{type: integer, minimum: 0, description: Units promised to open orders.}}
        warehouseId: {{type: string, format: uuid, description: Where most of the stock is held.}}
        unitCost:
          type: object
          description: Purchase price per unit, in minor units of the currency.
          properties:
            amount: {{type: integer, format: int64}}
            currency: {{type: string, pattern: '^[A-Z]{{3}}$'}}
        status: {{type: string, enum: [active, archived, pending], description: Lifecycle state.}}
        tags: {{type: array, items: {{type: string}}, description: Free-form labels for search.}}
        createdAt: {{type: string, format: date-time, readOnly: true}}
        updatedAt: {{type: string, format: date-time, readOnly: true}}
"
    );
}
