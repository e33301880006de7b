// Starts Swagger UI on the service's own OpenAPI document. An external file,
// not an inline script, so that the page's CSP can stay script-src 'self'.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    displayOperationId: true,
    // No call to the public validator (another origin, blocked by the CSP).
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
