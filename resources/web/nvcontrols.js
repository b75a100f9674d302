/*
 * netvlad-gui map controls (project code, MIT; not vendored): the "no street map" hint, the
 * tile-failure notice and the legend. Leaflet controls built from DOM nodes; every text is set
 * with textContent (nothing here comes from a file, but the rule is kept page-wide).
 * nvmap.js owns the state and decides when each shows.
 */
(function () {
    "use strict";

    function el(tag, className, text) {
        var node = document.createElement(tag);
        if (className) node.className = className;
        if (text !== undefined && text !== null) node.textContent = String(text);
        return node;
    }

    function button(className, text, title) {
        var node = el("button", className, text);
        node.setAttribute("type", "button");
        if (title) node.setAttribute("title", title);
        return node;
    }

    function show(control, visible) {
        var node = control && control.getContainer();
        if (node) node.style.display = visible ? "" : "none";
    }

    function visible(control) {
        var node = control && control.getContainer();
        return !!node && node.style.display !== "none";
    }

    // The tile server's host name, for messages (the URL's {z}/{x}/{y} filled with zeros).
    function tileHost(url) {
        try {
            return new URL(String(url).replace(/\{[^}]*\}/g, "0")).host || String(url);
        } catch (e) {
            return String(url);
        }
    }

    // A small box in the top-right corner with a close button; onClose runs after it hides.
    function notice(map, className, onClose) {
        var box = el("div", "nv-notice leaflet-bar " + className);
        var close = button("nv-notice-close", "\u00d7", "Hide this message");
        box.appendChild(close);
        var body = el("div", "nv-notice-body");
        box.appendChild(body);
        L.DomEvent.disableClickPropagation(box);
        L.DomEvent.disableScrollPropagation(box);
        var control = L.control({ position: "topright" });
        control.onAdd = function () { return box; };
        control.nvBody = body;
        L.DomEvent.on(close, "click", function () {
            show(control, false);
            if (onClose) onClose();
        });
        return control.addTo(map);
    }

    // "No street map" with a one-click way to online tiles (onUse false: no way from here).
    function hint(map, onUse, onClose) {
        var control = notice(map, "nv-hint", onClose);
        control.nvBody.appendChild(el("div", "nv-notice-text",
            "No street map: tiles are off, only coastlines and borders are drawn."));
        control.nvCoverageText = el("div", "nv-notice-text",
            "Faint blue: where your library's photos were taken.");
        control.nvBody.appendChild(control.nvCoverageText);
        var use = button("nv-use-tiles", "Use online map tiles",
            "Load street map tiles from the network (the tile server set in Settings)");
        control.nvBody.appendChild(use);
        L.DomEvent.on(use, "click", function () {
            if (onUse() === false) {
                use.textContent = "Turn on map tiles in the app's Settings";
                use.disabled = true;
            }
        });
        return control;
    }

    function tileError(map, onClose) {
        var control = notice(map, "nv-tile-error", onClose);
        control.nvText = el("div", "nv-notice-text");
        control.nvBody.appendChild(control.nvText);
        show(control, false);
        return control;
    }

    // What each kind of mark means; setKinds shows only the rows for marks on the map.
    var LEGEND_ROWS = [
        ["prediction", "nv-pred", "", "Predicted position (circle: uncertainty)"],
        ["guess", "nv-pred nv-guess", "", "Nearest guess: not found in this library"],
        ["first_guess", "nv-pred nv-guess", "", "First guess: its matches are being checked"],
        ["match", "nv-match", "1", "Best matches, by rank"],
        ["spread", "nv-leg", "", "Match moved aside: line to its spot"],
        ["truth", "nv-truth", "", "Photo's own GPS position"],
        ["cluster", "nv-cluster", "5", "Library photos, grouped (count)"],
        ["reference", "nv-ref", "", "Library photo"],
        ["coverage", "nv-coverage", "", "Library coverage"],
    ];

    var LEGEND_MIN_MAP = [640, 480]; // px: on a smaller map the legend starts collapsed

    function legend(map) {
        var control = L.control({ position: "bottomright" });
        var box = el("div", "nv-legend leaflet-bar");
        var title = el("div", "nv-legend-title", "Legend");
        title.setAttribute("title", "Click to show or hide what the marks mean");
        box.appendChild(title);
        var list = el("div", "nv-legend-rows");
        box.appendChild(list);
        var rows = {};
        LEGEND_ROWS.forEach(function (spec) {
            var row = el("div", "nv-legend-row");
            row.setAttribute("data-kind", spec[0]);
            var swatch = el("span", "nv-legend-swatch");
            swatch.appendChild(el("span", spec[1], spec[2] || null));
            row.appendChild(swatch);
            row.appendChild(el("span", "nv-legend-text", spec[3]));
            list.appendChild(row);
            rows[spec[0]] = row;
        });
        L.DomEvent.disableClickPropagation(box);
        var chosen = false; // the user opened or closed it: fitTo leaves it so
        L.DomEvent.on(title, "click", function () {
            chosen = true;
            box.classList.toggle("nv-collapsed");
        });
        control.onAdd = function () { return box; };
        control.collapsed = function () { return box.classList.contains("nv-collapsed"); };
        // On a small map the open legend would cover the evidence: it starts as its title only
        // (a click opens it), and opens by itself when the map grows, until the user chooses.
        control.fitTo = function (size) {
            if (chosen || !size) return;
            var small = size.x < LEGEND_MIN_MAP[0] || size.y < LEGEND_MIN_MAP[1];
            box.classList.toggle("nv-collapsed", small);
        };
        control.setKinds = function (kinds) {
            Object.keys(rows).forEach(function (kind) {
                rows[kind].style.display = kinds.indexOf(kind) >= 0 ? "" : "none";
            });
            show(control, kinds.length > 0);
        };
        return control.addTo(map);
    }

    window.nvControls = {
        hint: hint,
        tileError: tileError,
        legend: legend,
        show: show,
        visible: visible,
        tileHost: tileHost,
    };
})();
