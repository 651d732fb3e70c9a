// The /docs page: Swagger UI from files this service serves itself (no CDN, nothing from elsewhere).
// With FTAPI_API_KEY set, /openapi.json needs the key: the page asks for it once per tab, sends it as a
// header (never in a URL), and hands it to Swagger UI's Authorize so "Try it out" sends it too.
"use strict";

const KEY_STORE = "fasttask-api-key"; // the dashboard keeps its key under the same name
const $ = (id) => document.getElementById(id);

function storedKey() {
  return sessionStorage.getItem(KEY_STORE);
}

function askForKey(refused) {
  $("key-form").hidden = false;
  $("key-status").textContent = refused ? "the API key was refused" : "";
  $("key-input").focus();
}

function start() {
  const ui = SwaggerUIBundle({
    url: "openapi.json", // relative, so the page works behind a path prefix too
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    validatorUrl: null, // the default would send the document to an online validator
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    requestInterceptor: (request) => {
      const key = storedKey();
      const headers = request.headers || {};
      // a key typed into Authorize wins over the stored one
      if (key && !headers.Authorization && !headers["X-API-Key"]) headers["X-API-Key"] = key;
      request.headers = headers;
      return request;
    },
    responseInterceptor: (response) => {
      if (response.status === 401 && new URL(response.url, location.href).pathname.endsWith("/openapi.json")) {
        askForKey(Boolean(storedKey()));
      }
      return response;
    },
    onComplete: () => {
      const key = storedKey();
      if (key) ui.preauthorizeApiKey("apiKey", key);
    },
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    location.reload();
  });
  start();
});
