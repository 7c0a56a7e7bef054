import { useModelInfo } from "./api/hooks";
import { ErrorBanner } from "./components/ErrorBanner";
import { Link } from "./components/Link";
import { ProgressBar } from "./components/ProgressBar";
import { DebuggerPage } from "./pages/DebuggerPage";
import { GraphPage } from "./pages/GraphPage";
import { NodePage } from "./pages/NodePage";
import { WelcomePage } from "./pages/WelcomePage";
import { debuggerPath, graphPath, matchRoute, useLocation, type Route } from "./router";
import { datasetName } from "./state/nodes";

function Header({ route }: { route: Route }) {
  const info = useModelInfo();
  const model = route.page === "debugger" || route.page === "graph" || route.page === "node" ? route.model : info.data ? datasetName(info.data) : null;
  return (
    <header className="app-header">
      <Link href="/" className="brand">
        Transformer Debugger
      </Link>
      {model && (
        <nav>
          <Link href={debuggerPath(model)}>debugger</Link>
          <Link href={graphPath(model)}>graph</Link>
          <span className="muted">{model}</span>
        </nav>
      )}
    </header>
  );
}

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "welcome":
      return <WelcomePage />;
    case "debugger":
      return <DebuggerPage model={route.model} />;
    case "graph":
      return <GraphPage model={route.model} />;
    case "node":
      return <NodePage key={`${route.model}/${route.nodeType}/${route.layer}/${route.index}`} {...route} />;
    case "notFound":
      return (
        <div className="card">
          <h1>Not found</h1>
          <p>
            No page at <code>{route.path}</code>. Pages: <code>/</code>, <code>/&lt;model&gt;/tdb</code>, <code>/&lt;model&gt;/graph</code>,{" "}
            <code>/&lt;model&gt;/&lt;nodeType&gt;/&lt;layer&gt;/&lt;index&gt;</code>. <Link href="/">Home</Link>
          </p>
        </div>
      );
  }
}

export function App() {
  const { pathname } = useLocation();
  const route = matchRoute(pathname);
  return (
    <>
      <ProgressBar />
      <Header route={route} />
      <ErrorBanner />
      <main>
        <Page route={route} />
      </main>
    </>
  );
}
