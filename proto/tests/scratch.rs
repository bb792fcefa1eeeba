use berth_proto::manifest;
#[test]
fn scratch() {
    let t = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        image: x\n        imagePullPolicyy: Always\n---\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, ports: [{containerPort: abc}]}]}\n";
    println!("{:?}", manifest::parse_documents(t).unwrap().len());
    for d in manifest::parse_documents(t).unwrap() {
        println!("{}", manifest::Object::from_value(d.1).unwrap_err());
    }
    println!("{}", manifest::parse(t).unwrap_err());
    let t2 = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: http}], selector: {a: b}}\n";
    let o = manifest::parse(t2).unwrap();
    println!("{}", manifest::to_yaml(&o));
    println!("{}", manifest::to_json(&o[0]));
}
