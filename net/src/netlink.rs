//! A thin layer over rtnetlink: one connection per network namespace, lookups that answer
//! "absent" instead of ENODEV, and errors that name the operation and the object.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::NetError;
use crate::netns;

/// A netlink connection bound to one network namespace. Dropping it ends its connection task.
pub struct Netlink {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The errno of a kernel answer, if the error is one.
pub fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().raw_os_error(),
        _ => None,
    }
}

const ENODEV: i32 = nix::libc::ENODEV;
const EEXIST: i32 = nix::libc::EEXIST;
const ESRCH: i32 = nix::libc::ESRCH;
const EADDRNOTAVAIL: i32 = nix::libc::EADDRNOTAVAIL;

/// A link as far as this crate cares.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<InfoKind>,
    pub up: bool,
    pub mtu: Option<u32>,
    /// The bridge (or other master) it is a port of.
    pub controller: Option<u32>,
    /// For a veth: the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    pub alias: Option<String>,
}

impl Link {
    fn from_message(msg: LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: None,
            controller: None,
            peer_index: None,
            alias: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                LinkAttribute::Controller(index) => link.controller = Some(index),
                LinkAttribute::Link(index) => link.peer_index = Some(index),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind);
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

impl Netlink {
    /// Connects to the namespace at `netns_path` (None: the caller's).
    pub async fn connect(netns_path: Option<&Path>) -> Result<Self, NetError> {
        let socket = netns::netlink_socket(netns_path).await?;
        let (connection, handle, _messages) = rtnetlink::from_socket(socket);
        let connection = tokio::spawn(connection);
        Ok(Self { handle, connection })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The link called `name`, or None.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(msg) => Ok(msg.map(Link::from_message)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(NetError::netlink(format!("getting link {name}"), e)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink("listing links", e))?;
        Ok(msgs.into_iter().map(Link::from_message).collect())
    }

    /// Applies a RTM_SETLINK message built with `LinkUnspec`; `what` names it in errors.
    pub async fn set_link(&self, what: &str, msg: LinkMessage) -> Result<(), NetError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink(what.to_string(), e))
    }

    /// Creates a link (RTM_NEWLINK with create+excl); `what` names it in errors.
    pub async fn add_link(&self, what: &str, msg: LinkMessage) -> Result<(), NetError> {
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink(what.to_string(), e))
    }

    /// Deletes the link called `name` if it exists; true if it did.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            // Gone meanwhile (a veth goes with its peer).
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(NetError::netlink(format!("deleting link {name}"), e)),
        }
    }

    /// The IPv4 addresses (with prefix lengths) on link `index`, with their messages for deletion.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, NetError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink(format!("listing addresses of link {index}"), e))?;
        let mut out = Vec::new();
        for msg in msgs {
            // The filter is applied in user space by rtnetlink; check again to be sure.
            if msg.header.index != index {
                continue;
            }
            let local = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
                    Some(*ip)
                }
                _ => None,
            });
            if let Some(ip) = local {
                out.push((ip, msg.header.prefix_len, msg));
            }
        }
        Ok(out)
    }

    /// Makes `ip/prefix` the only IPv4 address of link `index` (`link_name` for errors).
    pub async fn ensure_only_address(
        &self,
        index: u32,
        link_name: &str,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        let mut present = false;
        for (have, have_prefix, msg) in self.ipv4_addresses(index).await? {
            if have == ip && have_prefix == prefix {
                present = true;
                continue;
            }
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(NetError::netlink(
                        format!("removing {have}/{have_prefix} from {link_name}"),
                        e,
                    ))
                }
            }
        }
        if present {
            return Ok(());
        }
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(NetError::netlink(
                format!("adding {ip}/{prefix} to {link_name}"),
                e,
            )),
        }
    }

    /// Adds or replaces a route (the caller names it in its error).
    pub async fn replace_route(&self, route: RouteMessage) -> Result<(), rtnetlink::Error> {
        self.handle.route().add(route).replace().execute().await
    }

    /// The IPv4 routes of the main table.
    pub async fn ipv4_routes(&self) -> Result<Vec<Route>, NetError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::netlink("listing IPv4 routes", e))?;
        Ok(msgs.into_iter().map(Route::from_message).collect())
    }

    /// Deletes a route; a route already gone is fine.
    pub async fn delete_route(&self, route: &Route) -> Result<(), NetError> {
        match self.handle.route().del(route.message.clone()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
            Err(e) => Err(NetError::netlink(
                format!("deleting route to {:?}", route.destination),
                e,
            )),
        }
    }
}

/// An IPv4 route as this crate cares about it.
#[derive(Debug, Clone)]
pub struct Route {
    pub destination: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub table: u32,
    pub protocol: u8,
    message: RouteMessage,
}

impl Route {
    fn from_message(message: RouteMessage) -> Self {
        let mut route = Route {
            destination: None,
            gateway: None,
            table: u32::from(message.header.table),
            protocol: u8::from(message.header.protocol),
            message: message.clone(),
        };
        for attr in &message.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                    route.destination = Some((*ip, message.header.destination_prefix_length))
                }
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                RouteAttribute::Table(table) => route.table = *table,
                _ => {}
            }
        }
        route
    }
}
